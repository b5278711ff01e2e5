// Starts the wallet and the discount service in-process against an isolated environment, and
// gives tests a redeem call that behaves like a well-made client: UNAVAILABLE (the service
// shedding a flash crowd, or restarting) is retried with a short pause and the same key.
import type { DescService } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { type Client, Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { bearerInterceptor } from "@ovation/auth";
import { CampaignKind, type DiscountService } from "@ovation/proto/gen/ovation/discount/v1/discount_pb.ts";
import { type TestEnvironment, testEnvironment } from "@ovation/testkit";
import { startWallet, type Wallet } from "@ovation/wallet";
import { type DiscountApp, startDiscount } from "../src/main.ts";

export const fastRetries = { EVENTS_RETRY_BACKOFF_MS: "50,100,200", EVENTS_ACK_WAIT_MS: "1500" };

export interface DiscountHarness {
  env: TestEnvironment;
  wallet: Wallet | undefined;
  discount: DiscountApp;
  startWallet(): Promise<Wallet>;
  stopWallet(): Promise<void>;
  client<S extends DescService>(service: S, url: string, token?: string): Client<S>;
  close(): Promise<void>;
}

export async function startDiscountHarness(extra: Record<string, string> = {}): Promise<DiscountHarness> {
  const env = await testEnvironment();
  const settings: Record<string, string> = { ...env.env, PORT: "0", ...fastRetries, ...extra };
  let discount: DiscountApp | undefined;
  const harness: DiscountHarness = {
    env,
    wallet: undefined,
    get discount() {
      return discount!;
    },
    async startWallet() {
      // Back on the port it had, where the discount service funds campaign budgets.
      harness.wallet = await startWallet(settings);
      settings.PORT = "0";
      return harness.wallet;
    },
    async stopWallet() {
      if (harness.wallet !== undefined) settings.PORT = String(harness.wallet.server.port);
      await harness.wallet?.close();
      harness.wallet = undefined;
    },
    client: (service, url, token) =>
      createClient(
        service,
        createGrpcTransport({ baseUrl: url, interceptors: token ? [bearerInterceptor(() => token)] : [] }),
      ),
    async close() {
      await discount?.close();
      await harness.stopWallet();
      await env[Symbol.asyncDispose]();
    },
  };
  try {
    const wallet = await harness.startWallet();
    settings.WALLET_URL = wallet.server.url;
    discount = await startDiscount(settings);
  } catch (error) {
    await harness.close();
    throw error;
  }
  return harness;
}

/** A shared-code campaign request, active now for an hour. */
export const sharedCampaign = (code: string, limit: bigint, extra: object = {}) => ({
  name: `campaign ${code}`,
  kind: CampaignKind.SHARED_CODE,
  code,
  money: { asset: "TOMAN", amount: 1_000_000n },
  redemptionLimit: limit,
  endTime: timestampFromDate(new Date(Date.now() + 3_600_000)),
  activate: true,
  idempotencyKey: crypto.randomUUID(),
  ...extra,
});

/**
 * Redeems as `token` with an idempotency key of its own, retrying UNAVAILABLE and broken
 * connections with the same key; resolves to the code name.
 */
export async function redeemAs(
  client: Client<typeof DiscountService>,
  token: string,
  code: string,
): Promise<{ code: string; position?: bigint; message?: string }> {
  const idempotencyKey = crypto.randomUUID();
  for (let attempt = 0; ; attempt++) {
    try {
      const reply = await client.redeem(
        { code, idempotencyKey },
        { headers: { authorization: `Bearer ${token}` } },
      );
      return { code: "OK", position: reply.position };
    } catch (error) {
      const refused = ConnectError.from(error);
      // What a client does: retry while the service is down or slower than its deadline, with
      // the same key, so a retry of a redemption whose answer was lost gets that redemption.
      const retried = refused.code === Code.Unavailable || refused.code === Code.DeadlineExceeded;
      if (!retried || attempt > 200) return { code: Code[refused.code], message: refused.rawMessage };
      await new Promise((resolve) => setTimeout(resolve, 20 + Math.random() * 80));
    }
  }
}

export { codeOf } from "@ovation/testkit";
