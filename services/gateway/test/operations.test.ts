// The operator's REST views (decision 0044) against real Postgres and NATS: consumer lag from
// JetStream for every durable consumer that exists, outbox rows JetStream refused with a retry,
// and the ledger audit over WalletService.AuditLedger. Each is admin only (401 anonymous, 403 a
// user), takes no stray query, refuses bad input with a 400 that names it, and is in the
// gateway's OpenAPI document.
import { enqueueEvents } from "@ovation/events";
import { waitFor } from "@ovation/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { call, type GatewayHarness, type Json, startGatewayHarness } from "./helpers.ts";

let h: GatewayHarness;
let gateway: string;
const tokens = { admin: "", user: "" };

beforeAll(async () => {
  h = await startGatewayHarness({ DATABASE_POOL_MAX: "3" }, { DATABASE_POOL_MAX: "3" });
  gateway = h.gateway.url;
  tokens.admin = await h.env.token("root", ["admin"]);
  tokens.user = await h.env.token("vic", ["user"]);
});

afterAll(async () => {
  await h?.close();
});

const paths = {
  consumers: "/api/admin/consumers",
  outbox: "/api/admin/outbox",
  audit: "/api/admin/wallet/audit",
} as const;

describe("admin only", () => {
  it.each(Object.values(paths))("%s: 401 without a token, 403 for a user", async (path) => {
    expect((await call(gateway, "GET", path)).status).toBe(401);
    const refused = await call(gateway, "GET", path, { token: tokens.user });
    expect(refused.status).toBe(403);
    expect(refused.body.code).toBe("permission_denied");
  });

  it("the retry route is admin only too, and POST only", async () => {
    const path = "/api/admin/outbox/wallet/1/retry";
    expect((await call(gateway, "POST", path, { token: tokens.user })).status).toBe(403);
    const wrongMethod = await call(gateway, "GET", path, { token: tokens.admin });
    expect(wrongMethod.status).toBe(405);
    expect(wrongMethod.headers.get("allow")).toBe("POST");
  });
});

describe("consumer lag", () => {
  it("lists every durable consumer the running services created, with counts from JetStream", async () => {
    const answer = await call(gateway, "GET", paths.consumers, { token: tokens.admin });
    expect(answer.status).toBe(200);
    expect(Number.isNaN(Date.parse(answer.body.time))).toBe(false);
    const byName = new Map<string, Json>(answer.body.consumers.map((one: Json) => [one.consumer, one]));
    // The harness runs the wallet, the gift service and the gateway, not PK or the shop.
    expect(byName.get("wallet-host-credit")).toMatchObject({ service: "wallet", stream: "GIFT" });
    expect(byName.get("gift-log")).toMatchObject({ service: "gift", stream: "GIFT" });
    expect(byName.get("gateway-boost-notifications")).toMatchObject({ service: "gateway", stream: "WALLET" });
    expect(byName.has("pk-score")).toBe(false);
    for (const consumer of byName.values()) {
      expect(consumer.pending).toBeGreaterThanOrEqual(0);
      expect(consumer.ackPending).toBeGreaterThanOrEqual(0);
      expect(consumer.redelivered).toBeGreaterThanOrEqual(0);
    }
  });

  it("refuses a query parameter", async () => {
    const refused = await call(gateway, "GET", `${paths.consumers}?stream=GIFT`, { token: tokens.admin });
    expect(refused.status).toBe(400);
    expect(refused.body.code).toBe("invalid_argument");
  });
});

describe("outbox rows", () => {
  it("lists a row JetStream refused with its error; a retry makes it due now", async () => {
    // The wallet may not publish this subject (bus permissions): its relay sets the row aside.
    await h.wallet.orm.em.fork().transactional((em) =>
      enqueueEvents(em, [
        {
          eventId: crypto.randomUUID(),
          subject: "nowhere.stuck.row",
          type: "t",
          payload: new Uint8Array(),
        },
      ]),
    );
    const row = await waitFor(async () => {
      const answer = await call(gateway, "GET", paths.outbox, { token: tokens.admin });
      return answer.body.rows?.find((one: Json) => one.subject === "nowhere.stuck.row");
    });
    expect(row).toMatchObject({ service: "wallet", type: "t" });
    expect(row.attempts).toBeGreaterThanOrEqual(1);
    expect(row.lastError).toMatch(/Permissions Violation for Publish/);
    const retried = await call(gateway, "POST", `/api/admin/outbox/wallet/${row.id}/retry`, {
      token: tokens.admin,
    });
    expect(retried.status).toBe(200);
    expect(retried.body).toEqual({ service: "wallet", id: row.id, due: true });
    await h.wallet.orm.em.fork().execute("delete from outbox where subject = 'nowhere.stuck.row'");
  });

  it("answers 404 for a row that is not there and 400 for an unknown service or a malformed id", async () => {
    const missing = await call(gateway, "POST", "/api/admin/outbox/wallet/999999/retry", {
      token: tokens.admin,
    });
    expect(missing.status).toBe(404);
    const unknown = await call(gateway, "POST", "/api/admin/outbox/nosuch/1/retry", { token: tokens.admin });
    expect(unknown.status).toBe(400);
    expect(unknown.body.message).toMatch(/service: one of wallet, gift/);
    const malformed = await call(gateway, "POST", "/api/admin/outbox/wallet/x1/retry", {
      token: tokens.admin,
    });
    expect(malformed.status).toBe(400);
    expect(malformed.body.message).toMatch(/id/);
  });

  it("skips the outboxes of services that have no schema here (PK and the shop do not run)", async () => {
    const answer = await call(gateway, "GET", paths.outbox, { token: tokens.admin });
    expect(answer.status).toBe(200);
    expect(answer.body.rows.every((one: Json) => one.service === "wallet" || one.service === "gift")).toBe(
      true,
    );
  });
});

describe("ledger audit", () => {
  it("passes on a ledger with money in it, check by check", async () => {
    const minted = await call(gateway, "POST", "/api/admin/wallet/mint", {
      token: tokens.admin,
      body: {
        userId: "vic",
        money: { asset: "COIN", amount: "500" },
        reference: "audit",
        idempotencyKey: "m1",
      },
    });
    expect(minted.status).toBe(200);
    const answer = await call(gateway, "GET", paths.audit, { token: tokens.admin });
    expect(answer.status).toBe(200);
    expect(answer.body.ok).toBe(true);
    expect(answer.body.checks).toContainEqual({
      passed: true,
      text: expect.stringMatching(/^COIN: \d+ accounts sum to 0$/),
    });
    expect(answer.body.checks.every((check: Json) => check.passed)).toBe(true);
  });
});

it("the OpenAPI document lists the three views", async () => {
  const document = (await call(gateway, "GET", "/api/openapi.json")).body;
  expect(document.paths[paths.consumers].get.operationId).toBe("listConsumerLag");
  expect(document.paths[paths.outbox].get.operationId).toBe("listFailingOutboxRows");
  expect(document.paths["/api/admin/outbox/{service}/{id}/retry"].post.operationId).toBe("retryOutboxRow");
  expect(document.paths[paths.audit].get.operationId).toBeDefined();
});
