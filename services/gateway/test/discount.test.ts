// Discount through the front door: a flash crowd on POST /api/discount/redeem gets exactly N
// redemptions, every refusal its own HTTP status, the counters live on campaign:<id>, and a
// throttled caller a Retry-After. Retries with an idempotency key (the Idempotency-Key header or
// the idempotencyKey field) get the first answer: a redemption also after its campaign filled,
// a campaign also when its startTime was left out (decision 0031).
import { waitFor } from "@ovation/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { call, type GatewayHarness, openSocket, startGatewayHarness } from "./helpers.ts";

let h: GatewayHarness;
let url: string;
let admin: string;

beforeAll(async () => {
  h = await startGatewayHarness(
    {
      RATE_LIMIT_IP_WRITES: "100000",
      RATE_LIMIT_USER_WRITES: "100000",
      RATE_LIMIT_IP_READS: "100000",
      RATE_LIMIT_USER_READS: "100000",
    },
    {},
    { discount: { DISCOUNT_USER_REDEEMS_PER_MINUTE: "3" } },
  );
  url = h.gateway.url;
  admin = await h.env.token("ops", ["admin"]);
});
afterAll(() => h?.close());

const redeem = (token: string, code: string) =>
  call(url, "POST", "/api/discount/redeem", { token, body: { code } });

describe("discount through the gateway", () => {
  it("gives exactly N of a crowd a redemption, and streams the counters on campaign:<id>", async () => {
    const created = await call(url, "POST", "/api/admin/discount/campaigns", {
      token: admin,
      body: {
        name: "Yalda",
        kind: "CAMPAIGN_KIND_SHARED_CODE",
        code: "YALDA",
        money: { asset: "COIN", amount: "100" },
        redemptionLimit: "50",
        endTime: new Date(Date.now() + 3_600_000).toISOString(),
        activate: true,
        idempotencyKey: "yalda",
      },
    });
    expect(created.status).toBe(200);
    const campaignId: string = created.body.campaign.id;
    const watcher = await openSocket(url, { token: await h.env.token("watcher", ["user"]) });
    await watcher.next((m) => m.type === "authenticated");
    watcher.send({ op: "subscribe", channel: `campaign:${campaignId}` });
    await watcher.next((m) => m.type === "subscribed");

    const tokens = await Promise.all(
      Array.from({ length: 200 }, (_, i) => h.env.token(`crowd${i}`, ["user"])),
    );
    const replies = await Promise.all(tokens.map((token) => redeem(token, "yalda")));
    const statuses = replies.map((r) => r.status);
    expect(statuses.filter((s) => s === 200)).toHaveLength(50);
    expect(statuses.filter((s) => s === 429)).toHaveLength(150);
    expect(replies.find((r) => r.status === 429)?.body).toMatchObject({
      code: "resource_exhausted",
      message: "campaign exhausted",
    });
    expect(replies.find((r) => r.status === 200)?.body).toMatchObject({
      campaignId,
      money: { asset: "COIN", amount: "100" },
      redemptionLimit: "50",
    });
    const positions = replies.filter((r) => r.status === 200).map((r) => Number(r.body.position));
    expect(positions.sort((a, b) => a - b)).toEqual(Array.from({ length: 50 }, (_, i) => i + 1));

    const last = await watcher.next((m) => m.type === "campaign.changed" && m.data.exhausted === true);
    expect(last.data).toMatchObject({
      campaignId,
      redeemed: "50",
      remaining: "0",
      status: "CAMPAIGN_STATUS_ACTIVE",
    });
    watcher.close();

    const shown = await call(url, "GET", `/api/discount/campaigns/${campaignId}`, { token: tokens[0] });
    expect(shown.body.campaign).toMatchObject({ redeemed: "50", remaining: "0", code: "" });
    await waitFor(
      async () =>
        (await call(url, "GET", `/api/admin/discount/campaigns/${campaignId}/report`, { token: admin })).body
          .credited === "50",
      { what: "50 credits in the report" },
    );
  });

  it("lists the discount routes in the OpenAPI document", async () => {
    const paths = Object.keys((await call(url, "GET", "/api/openapi.json")).body.paths);
    expect(paths).toEqual(
      expect.arrayContaining([
        "/api/discount/redeem",
        "/api/discount/campaigns/{campaignId}",
        "/api/admin/discount/campaigns",
        "/api/admin/discount/campaigns/{campaignId}/status",
        "/api/admin/discount/campaigns/{campaignId}/codes",
        "/api/admin/discount/campaigns/{campaignId}/report",
      ]),
    );
  });

  it("answers a retried redeem with the first redemption, by header or body key, also once the campaign is full", async () => {
    await call(url, "POST", "/api/admin/discount/campaigns", {
      token: admin,
      body: {
        name: "Twice each",
        kind: "CAMPAIGN_KIND_SHARED_CODE",
        code: "TWOEACH",
        money: { asset: "COIN", amount: "5" },
        redemptionLimit: "2",
        perUserLimit: 2,
        endTime: new Date(Date.now() + 3_600_000).toISOString(),
        activate: true,
        idempotencyKey: "two-each",
      },
    });
    const [retrier, filler] = await Promise.all([
      h.env.token("retrier", ["user"]),
      h.env.token("filler", ["user"]),
    ]);
    const first = await call(url, "POST", "/api/discount/redeem", {
      token: retrier,
      headers: { "idempotency-key": "redeem-1" },
      body: { code: "TWOEACH" },
    });
    expect(first.status).toBe(200);
    expect(first.body).toMatchObject({ position: "1", redemptionLimit: "2" });
    const retried = await call(url, "POST", "/api/discount/redeem", {
      token: retrier,
      body: { code: "twoeach", idempotencyKey: "redeem-1" },
    });
    expect(retried).toMatchObject({ status: 200, body: first.body });
    expect((await redeem(filler, "TWOEACH")).body).toMatchObject({ position: "2" });
    expect((await redeem(filler, "TWOEACH")).body).toMatchObject({ message: "campaign exhausted" });
    const afterFull = await call(url, "POST", "/api/discount/redeem", {
      token: retrier,
      headers: { "idempotency-key": "redeem-1" },
      body: { code: "TWOEACH" },
    });
    expect(afterFull).toMatchObject({ status: 200, body: first.body });
  });

  it("answers a retried campaign creation that left startTime out with the first campaign", async () => {
    const body = {
      name: "Starts now",
      kind: "CAMPAIGN_KIND_SHARED_CODE",
      code: "STARTSNOW",
      money: { asset: "COIN", amount: "1" },
      redemptionLimit: "10",
      endTime: new Date(Date.now() + 3_600_000).toISOString(),
      activate: true,
    };
    const headers = { "idempotency-key": "starts-now" };
    const first = await call(url, "POST", "/api/admin/discount/campaigns", { token: admin, headers, body });
    expect(first.status).toBe(200);
    const retried = await call(url, "POST", "/api/admin/discount/campaigns", { token: admin, headers, body });
    expect(retried).toMatchObject({ status: 200, body: first.body });
  });

  it("documents Redeem's optional idempotency key in the OpenAPI document", async () => {
    const redeemOperation = (await call(url, "GET", "/api/openapi.json")).body.paths["/api/discount/redeem"]
      .post;
    expect(redeemOperation.parameters).toEqual(
      expect.arrayContaining([expect.objectContaining({ name: "Idempotency-Key", in: "header" })]),
    );
  });

  it("answers each refusal with its own status, and a throttled caller with Retry-After", async () => {
    const user = await h.env.token("single", ["user"]);
    await call(url, "POST", "/api/admin/discount/campaigns", {
      token: admin,
      body: {
        name: "Once",
        kind: "CAMPAIGN_KIND_SHARED_CODE",
        code: "ONCE",
        money: { asset: "COIN", amount: "1" },
        redemptionLimit: "10",
        endTime: new Date(Date.now() + 3_600_000).toISOString(),
        activate: true,
        idempotencyKey: "once",
      },
    });
    expect((await redeem(user, "ONCE")).status).toBe(200);
    expect((await redeem(user, "ONCE")).status).toBe(409);
    expect((await redeem(user, "NOSUCH")).status).toBe(404);
    const throttled = await redeem(user, "ONCE");
    expect(throttled.status).toBe(429);
    expect(throttled.body.message).toBe("too many redeem attempts");
    expect(Number(throttled.headers.get("retry-after"))).toBeGreaterThan(0);
    expect((await call(url, "POST", "/api/discount/redeem", { token: user, body: {} })).status).toBe(400);
    expect((await call(url, "POST", "/api/admin/discount/campaigns", { token: user, body: {} })).status).toBe(
      403,
    );
  });
});
