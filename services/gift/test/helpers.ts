// Starts the wallet and the gift service in-process against an isolated environment, with
// short retry delays so fault tests finish quickly.
import type { DescService } from "@bufbuild/protobuf";
import { type Client, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { bearerInterceptor } from "@ovation/auth";
import { type TestEnvironment, testEnvironment } from "@ovation/testkit";
import { startWallet, type Wallet } from "@ovation/wallet";
import { type GiftApp, startGift } from "../src/main.ts";

export const fastRetries = { EVENTS_RETRY_BACKOFF_MS: "50,100,200", EVENTS_ACK_WAIT_MS: "1500" };

export interface GiftHarness {
  env: TestEnvironment;
  wallet: Wallet;
  gift: GiftApp;
  client<S extends DescService>(service: S, url: string, token?: string): Client<S>;
  close(): Promise<void>;
}

export async function startGiftHarness(extra: Record<string, string> = {}): Promise<GiftHarness> {
  const env = await testEnvironment();
  const opened: { close(): Promise<void> }[] = [];
  try {
    const wallet = await startWallet({ ...env.env, PORT: "0", ...fastRetries, ...extra });
    opened.push(wallet);
    const gift = await startGift({
      ...env.env,
      PORT: "0",
      WALLET_URL: wallet.server.url,
      ...fastRetries,
      ...extra,
    });
    opened.push(gift);
    return {
      env,
      wallet,
      gift,
      client: (service, url, token) =>
        createClient(
          service,
          createGrpcTransport({ baseUrl: url, interceptors: token ? [bearerInterceptor(() => token)] : [] }),
        ),
      async close() {
        for (const app of opened.reverse()) await app.close();
        await env[Symbol.asyncDispose]();
      },
    };
  } catch (error) {
    for (const app of opened.reverse()) await app.close();
    await env[Symbol.asyncDispose]();
    throw error;
  }
}

export { codeOf } from "@ovation/testkit";
