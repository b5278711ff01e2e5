// Shared set-up for wallet integration tests: an isolated environment, the wallet started
// in-process on a free port, and authenticated clients.
import type { DescService } from "@bufbuild/protobuf";
import { type Client, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { bearerInterceptor } from "@ovation/auth";
import { type TestEnvironment, testEnvironment } from "@ovation/testkit";
import { startWallet, type Wallet } from "../src/main.ts";

export interface WalletHarness {
  env: TestEnvironment;
  wallet: Wallet;
  client<S extends DescService>(service: S, token?: string): Client<S>;
  close(): Promise<void>;
}

export async function startWalletHarness(extraEnv: Record<string, string> = {}): Promise<WalletHarness> {
  // The shop and the PK service do not exist yet; the wallet's policy already names the shop.
  const env = await testEnvironment({ extraServices: ["order", "pk"] });
  let wallet: Wallet;
  try {
    wallet = await startWallet({
      ...env.env,
      PORT: "0",
      EVENTS_RETRY_BACKOFF_MS: "50,100,200",
      ...extraEnv,
    });
  } catch (error) {
    await env[Symbol.asyncDispose]();
    throw error;
  }
  return {
    env,
    wallet,
    client: (service, token) =>
      createClient(
        service,
        createGrpcTransport({
          baseUrl: wallet.server.url,
          interceptors: token ? [bearerInterceptor(() => token)] : [],
        }),
      ),
    async close() {
      await wallet.close();
      await env[Symbol.asyncDispose]();
    },
  };
}
