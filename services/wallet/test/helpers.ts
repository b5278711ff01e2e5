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
  /** Signs user tokens for these users now, so that `consent` can hand them out synchronously. */
  prepareConsent(users: readonly string[]): Promise<void>;
  /** The user's own token, as a service passes it on as consent_token (prepareConsent first). */
  consent(user: string): string;
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
  const consentTokens = new Map<string, string>();
  return {
    env,
    wallet,
    async prepareConsent(users) {
      for (const user of users) consentTokens.set(user, await env.token(user, ["user"]));
    },
    consent(user) {
      const token = consentTokens.get(user);
      if (token === undefined) throw new Error(`no consent token prepared for ${user}`);
      return token;
    },
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
