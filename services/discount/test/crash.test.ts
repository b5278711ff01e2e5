// The discount service killed (SIGKILL) in the middle of a flash crowd and started again on the
// same port: clients retry what failed with the same idempotency key, and the campaign still
// ends with exactly N redemptions, positions 1..N, exactly N credits, and every winner told so.
import { resolve } from "node:path";
import { bearerInterceptor } from "@ovation/auth";
import { DiscountService } from "@ovation/proto/gen/ovation/discount/v1/discount_pb.ts";
import { createServiceClient } from "@ovation/server";
import { type TestEnvironment, testEnvironment, waitFor } from "@ovation/testkit";
import { type ServiceProcess, startServiceProcess } from "@ovation/testkit/bench";
import { startWallet, type Wallet } from "@ovation/wallet";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { fastRetries, redeemAs, sharedCampaign } from "./helpers.ts";

const discountMain = resolve(import.meta.dirname, "../src/main.ts");
let env: TestEnvironment;
let wallet: Wallet;
let discount: ServiceProcess;

beforeAll(async () => {
  env = await testEnvironment();
  wallet = await startWallet({ ...env.env, PORT: "0", ...fastRetries });
  discount = await startServiceProcess(discountMain, {
    ...env.env,
    ...fastRetries,
    WALLET_URL: wallet.server.url,
  });
});
afterAll(async () => {
  await discount?.stop();
  await wallet?.close();
  await env?.[Symbol.asyncDispose]();
});

describe("a discount process killed mid-flash", () => {
  it("still gives exactly N redemptions and N credits once it is back", async () => {
    // The project's client: a connection broken by the kill is UNAVAILABLE, which is retried,
    // and so is a call slower than its deadline while 2,500 users hit the restarted process.
    const client = (token?: string) =>
      createServiceClient(DiscountService, {
        baseUrl: discount.url,
        interceptors: token === undefined ? [] : [bearerInterceptor(() => token)],
      });
    await client(await env.token("ops", ["admin"])).createCampaign(sharedCampaign("KILLED", 1_000n));
    const tokens = await Promise.all(Array.from({ length: 2_500 }, (_, i) => env.token(`k${i}`, ["user"])));
    const flash = Promise.all(tokens.map((token) => redeemAs(client(), token, "KILLED")));
    const db = new pg.Client({ connectionString: env.databaseUrl });
    await db.connect();
    try {
      // Kill it once some redemptions are in and the crowd is still coming.
      await waitFor(
        async () =>
          Number((await db.query("select count(*)::int as n from discount.redemptions")).rows[0].n) > 50,
        // 2,500 calls opening at once: on a loaded machine the first commits take a while.
        { timeoutMs: 30_000, what: "the first redemptions" },
      );
      await discount.stop("SIGKILL");
      discount = await startServiceProcess(
        discountMain,
        { ...env.env, ...fastRetries, WALLET_URL: wallet.server.url },
        discount.port,
      );
      const outcomes = await flash;
      expect(outcomes.filter((o) => !["OK", "ResourceExhausted"].includes(o.code))).toEqual([]);
      const positions = (
        await db.query<{ position: string }>("select position::text from discount.redemptions")
      ).rows
        .map((r) => Number(r.position))
        .sort((a, b) => a - b);
      expect(positions).toEqual(Array.from({ length: 1_000 }, (_, i) => i + 1));
      // Exactly 1,000 distinct winners, and each of them told so. A request in flight at the
      // kill may have been recorded without its answer; its retry, with the same idempotency
      // key, gets that redemption back, also once the campaign is full (decision 0031).
      const winners = new Set(
        (await db.query<{ user_id: string }>("select user_id from discount.redemptions")).rows.map(
          (r) => r.user_id,
        ),
      );
      expect(winners.size).toBe(1_000);
      const toldYes = outcomes.flatMap((o, i) => (o.code === "OK" ? [`k${i}`] : []));
      expect(new Set(toldYes)).toEqual(winners);
      await waitFor(
        async () =>
          (await db.query("select count(*)::int as n from wallet.transfers where kind = 7")).rows[0].n ===
          1_000,
        { timeoutMs: 60_000, what: "1,000 credits" },
      );
    } finally {
      await db.end();
    }
  }, 120_000);
});
