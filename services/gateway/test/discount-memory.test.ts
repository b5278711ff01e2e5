// A flash crowd is answered from memory once its campaign is exhausted (decision 0034): each
// gateway replica learns "campaign exhausted" from the discount service's first such answer and
// refuses later key-less redeems of that code itself — with the discount service unreachable
// the refusals still come, fast and with the service's own reply — while a winner's keyed retry
// is always forwarded and gets its redemption back. Key-less redeems queued for an upstream slot
// are refused as soon as exhaustion is learnt, not after the calls ahead of them. A campaign
// that has slots again is redeemable at once when its CampaignChanged says so, and within
// DISCOUNT_EXHAUSTED_REVALIDATE_MS when no event does.
import { FaultProxy, waitFor } from "@ovation/testkit";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Gateway } from "../src/main.ts";
import { call, type GatewayHarness, startGatewayHarness } from "./helpers.ts";

const unthrottled = {
  RATE_LIMIT_IP_WRITES: "100000",
  RATE_LIMIT_USER_WRITES: "100000",
  RATE_LIMIT_IP_READS: "100000",
  RATE_LIMIT_USER_READS: "100000",
};
/**
 * The replica that re-checks a learnt refusal often, without an event: long enough for a crowd
 * of 20 on a busy machine to be answered inside one interval, where no redeem is forwarded.
 */
const revalidateMs = 1_500;

let h: GatewayHarness;
let proxy: FaultProxy;
let admin: string;
/** Re-checks only when an event or an answer says so (an hour's interval). */
let hourly: Gateway;
/** Re-checks every 1.5 s. */
let often: Gateway;

beforeAll(async () => {
  // The discount service re-reads its own exhausted campaigns every 200 ms (decision 0031).
  h = await startGatewayHarness(unthrottled, {}, { discount: { DISCOUNT_CACHE_REVALIDATE_MS: "200" } });
  proxy = await FaultProxy.start(h.discount!.server.url);
  const behindProxy = { ...unthrottled, DISCOUNT_URL: proxy.url(h.discount!.server.url) };
  hourly = await h.extraGateway({ ...behindProxy, DISCOUNT_EXHAUSTED_REVALIDATE_MS: "3600000" });
  often = await h.extraGateway({ ...behindProxy, DISCOUNT_EXHAUSTED_REVALIDATE_MS: String(revalidateMs) });
  admin = await h.env.token("ops", ["admin"]);
});
afterAll(async () => {
  await proxy?.close();
  await h?.close();
});

const user = (name: string) => h.env.token(name, ["user"]);

async function sharedCampaign(code: string, slots: number): Promise<string> {
  const created = await call(h.gateway.url, "POST", "/api/admin/discount/campaigns", {
    token: admin,
    body: {
      name: code,
      kind: "CAMPAIGN_KIND_SHARED_CODE",
      code,
      money: { asset: "COIN", amount: "7" },
      redemptionLimit: String(slots),
      endTime: new Date(Date.now() + 3_600_000).toISOString(),
      activate: true,
      idempotencyKey: code,
    },
  });
  expect(created.status).toBe(200);
  return created.body.campaign.id;
}

const redeem = (gateway: Gateway, token: string, code: string, key?: string) =>
  call(gateway.url, "POST", "/api/discount/redeem", {
    token,
    body: { code },
    ...(key === undefined ? {} : { headers: { "idempotency-key": key } }),
  });

describe("exhausted campaigns answered from the gateway's memory", () => {
  it("refuses key-less redeems with the discount service cut off, on every replica that learnt it, and forwards a winner's keyed retry", async () => {
    await sharedCampaign("MEMORY", 2);
    const winners = await Promise.all([user("winner-1"), user("winner-2")]);
    const won = await Promise.all(winners.map((token, i) => redeem(hourly, token, "MEMORY", `win-${i}`)));
    expect(won.map((r) => r.status)).toEqual([200, 200]);
    // Each replica learns from the service's own answer, its first refusal.
    const learnt = await redeem(hourly, await user("late-1"), "memory");
    expect(learnt).toMatchObject({
      status: 429,
      body: { code: "resource_exhausted", message: "campaign exhausted" },
    });
    expect((await redeem(often, await user("late-2"), "MEMORY")).status).toBe(429);

    proxy.cut();
    try {
      const crowd = await Promise.all(Array.from({ length: 20 }, (_, i) => user(`crowd-${i}`)));
      for (const gateway of [hourly, often]) {
        const refusedBefore = gateway.exhausted!.refused;
        const started = performance.now();
        const replies = await Promise.all(crowd.map((token) => redeem(gateway, token, "Memory")));
        expect(performance.now() - started).toBeLessThan(1_000);
        // The very reply the discount service gave, ErrorInfo detail included.
        for (const reply of replies) expect(reply).toMatchObject({ status: 429, body: learnt.body });
        expect(gateway.exhausted!.refused - refusedBefore).toBe(crowd.length);
      }
      // A keyed retry may be a winner's: it is forwarded, and the service is unreachable.
      expect((await redeem(hourly, winners[0]!, "MEMORY", "win-0")).status).toBe(503);
    } finally {
      proxy.restore();
    }
    const retried = await redeem(hourly, winners[0]!, "MEMORY", "win-0");
    expect(retried).toMatchObject({ status: 200, body: won[0]!.body });
  });

  it("refuses key-less redeems queued for an upstream slot as soon as exhaustion is learnt", async () => {
    await sharedCampaign("QUEUED", 1);
    expect((await redeem(h.gateway, await user("queued-winner"), "QUEUED")).status).toBe(200);
    // One call at a time to a service 300 ms away each way: queued one behind another, 12
    // redeems would take over 7 s; the first answer refuses the 11 still waiting.
    const narrow = await h.extraGateway({
      ...unthrottled,
      DISCOUNT_URL: proxy.url(h.discount!.server.url),
      UPSTREAM_INFLIGHT_MAX: "1",
      UPSTREAM_QUEUE_WAIT_MS: "30000",
    });
    const crowd = await Promise.all(Array.from({ length: 12 }, (_, i) => user(`queued-${i}`)));
    proxy.latency(300);
    try {
      const started = performance.now();
      const replies = await Promise.all(crowd.map((token) => redeem(narrow, token, "QUEUED")));
      expect(replies.map((r) => r.status)).toEqual(crowd.map(() => 429));
      expect(replies.every((r) => r.body.message === "campaign exhausted")).toBe(true);
      expect(performance.now() - started).toBeLessThan(4_000);
    } finally {
      proxy.restore();
    }
  });

  it("redeems a campaign that has slots again: on its CampaignChanged at once, within the interval without one", async () => {
    const campaignId = await sharedCampaign("REOPENS", 1);
    expect((await redeem(h.gateway, await user("reopens-first"), "REOPENS")).status).toBe(200);
    for (const gateway of [hourly, often])
      expect((await redeem(gateway, await user("reopens-late"), "REOPENS")).status).toBe(429);

    // Two more slots, and no event says so (a lost CampaignChanged, as decision 0031 feared).
    const db = new pg.Client({ connectionString: h.env.databaseUrl });
    await db.connect();
    try {
      await db.query(
        "update discount.campaigns set redemption_limit = 3, changed_at = clock_timestamp() where id = $1",
        [campaignId],
      );
    } finally {
      await db.end();
    }
    // The often-checking replica forwards one redeem per interval, and one gets through once
    // the service itself has re-read the campaign.
    const second = await user("reopens-second");
    const reply = await waitFor(
      async () => {
        const answer = await redeem(often, second, "REOPENS");
        return answer.status === 200 ? answer : undefined;
      },
      {
        timeoutMs: 20 * revalidateMs,
        intervalMs: 50,
        what: "a redemption through the replica that re-checks",
      },
    );
    expect(reply.body).toMatchObject({ position: "2", redemptionLimit: "3" });
    // That claim's CampaignChanged (2 of 3: not exhausted) ends the hourly replica's refusal.
    await waitFor(() => !hourly.exhausted!.has("REOPENS"), {
      what: "the hourly replica hears the campaign reopened",
    });
    expect((await redeem(hourly, await user("reopens-third"), "REOPENS")).status).toBe(200);
  });
});
