// Starts the wallet and the gift service in-process against an isolated environment, with
// short retry delays so fault tests finish quickly.
import type { DescService } from "@bufbuild/protobuf";
import { type Client, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { bearerInterceptor } from "@ovation/auth";
import { type TestEnvironment, testEnvironment } from "@ovation/testkit";
import { startWallet, type Wallet } from "@ovation/wallet";
import type { GiftPayments } from "../src/app/ports.ts";
import { type GiftApp, startGift } from "../src/main.ts";

export const fastRetries = { EVENTS_RETRY_BACKOFF_MS: "50,100,200", EVENTS_ACK_WAIT_MS: "1500" };

export interface GiftHarness {
  env: TestEnvironment;
  wallet: Wallet;
  gift: GiftApp;
  client<S extends DescService>(service: S, url: string, token?: string): Client<S>;
  /**
   * Stops the gift service and starts it again on the same port, database and streams, after
   * `whileDown` when given.
   */
  restartGift(extra?: Record<string, string>, whileDown?: () => Promise<unknown>): Promise<GiftApp>;
  close(): Promise<void>;
}

export async function startGiftHarness(extra: Record<string, string> = {}): Promise<GiftHarness> {
  const env = await testEnvironment();
  const opened: { close(): Promise<void> }[] = [];
  try {
    const wallet = await startWallet({ ...env.env, PORT: "0", ...fastRetries, ...extra });
    opened.push(wallet);
    const startGiftApp = (more: Record<string, string> = {}) =>
      startGift({ ...env.env, PORT: "0", WALLET_URL: wallet.server.url, ...fastRetries, ...extra, ...more });
    const harness: GiftHarness = {
      env,
      wallet,
      gift: await startGiftApp(),
      client: (service, url, token) =>
        createClient(
          service,
          createGrpcTransport({ baseUrl: url, interceptors: token ? [bearerInterceptor(() => token)] : [] }),
        ),
      async restartGift(more, whileDown) {
        // On the same port, so clients made before the restart reach the new process.
        const port = new URL(harness.gift.server.url).port;
        await harness.gift.close();
        await whileDown?.();
        harness.gift = await startGiftApp({ PORT: port, ...more });
        return harness.gift;
      },
      async close() {
        await harness.gift.close();
        for (const app of opened.reverse()) await app.close();
        await env[Symbol.asyncDispose]();
      },
    };
    return harness;
  } catch (error) {
    for (const app of opened.reverse()) await app.close();
    await env[Symbol.asyncDispose]();
    throw error;
  }
}

/**
 * The real wallet adapter, except that the first answer it gets is handed back only once the
 * test lets it go: a request that hears its refusal late, while a retry of the same key runs.
 */
export function answerHeldBack(payments: GiftPayments) {
  let letGo!: () => void;
  const gate = new Promise<void>((resolve) => {
    letGo = resolve;
  });
  let answered!: () => void;
  const firstAnswered = new Promise<void>((resolve) => {
    answered = resolve;
  });
  let calls = 0;
  const held: GiftPayments = {
    async transfer(request) {
      const answer = await payments.transfer(request);
      if (calls++ === 0) {
        answered();
        await gate;
      }
      return answer;
    },
  };
  return { payments: held, firstAnswered, letGo };
}

export { codeOf } from "@ovation/testkit";
