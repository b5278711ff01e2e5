// Proves claim_redemptions itself (sql/claim_redemptions.sql), called with SQL on a migrated
// discount schema, without the service: dense positions up to the limit, the per-user share
// checked before exhaustion, single-use codes used once, every inactive reason, an unknown
// campaign, one counter update per batch, exactly N winners under concurrent batches, and an
// idempotency key that gets its redemption back before any refusal.
import { randomUUID } from "node:crypto";
import { type MigratedSchema, migratedSchema } from "@ovation/db/testing";
import { type TestEnvironment, testEnvironment } from "@ovation/testkit";
import type pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { discountMigrations } from "../src/store/migrations.ts";

let env: TestEnvironment;
let pool: pg.Pool;
let schema: MigratedSchema;

beforeAll(async () => {
  env = await testEnvironment();
  schema = await migratedSchema(env.databaseUrl, "discount", discountMigrations, 8);
  ({ pool } = schema);
});
afterAll(async () => {
  await schema?.close();
  await env?.[Symbol.asyncDispose]();
});

const status = { notActivated: 1, active: 2, paused: 3, ended: 4 } as const;
const hours = (n: number) => new Date(Date.now() + n * 3600_000);

interface CampaignSpec {
  limit?: number;
  perUser?: number;
  status?: number;
  startsAt?: Date;
  endsAt?: Date;
  /** Single-use codes (kind 2) instead of one shared code (kind 1). */
  singleUse?: boolean;
}

async function campaign(spec: CampaignSpec = {}): Promise<string> {
  const id = randomUUID();
  await pool.query(
    `insert into campaigns (id, name, kind, code, asset, amount, redemption_limit, per_user_limit, starts_at, ends_at,
                           status, created_by, idempotency_key, request_hash, created_at)
     values ($1, 'test', $2::smallint, $3, 'COIN', 10, $4, $5, $6, $7, $8, 'admin', $9, '\\x00', now())`,
    [
      id,
      spec.singleUse ? 2 : 1,
      spec.singleUse ? null : `CODE-${id}`,
      spec.limit ?? 100,
      spec.perUser ?? 1,
      spec.startsAt ?? hours(-1),
      spec.endsAt ?? hours(1),
      spec.status ?? status.active,
      randomUUID(),
    ],
  );
  return id;
}

interface Request {
  id: string;
  user_id: string;
  code_id: string | null;
  key?: string;
}

const request = (user: string, code: string | null = null, key?: string): Request => ({
  id: randomUUID(),
  user_id: user,
  code_id: code,
  ...(key === undefined ? {} : { key }),
});

interface Answer {
  id: string;
  outcome: string;
  position: string | null;
  reason: string | null;
  redemption_limit: string;
  redemption_id: string | null;
  redeemed_at: Date | null;
}

async function claim(campaignId: string, requests: readonly Request[], now = new Date()): Promise<Answer[]> {
  const { rows } = await pool.query<Answer>("select * from claim_redemptions($1, $2::jsonb, $3)", [
    campaignId,
    JSON.stringify(requests),
    now,
  ]);
  return rows;
}

const summary = (answers: readonly Answer[]) => answers.map((a) => [a.outcome, a.position, a.reason]);

async function redeemed(campaignId: string): Promise<number> {
  return (await pool.query("select redeemed::int from campaigns where id = $1", [campaignId])).rows[0]
    .redeemed;
}

describe("claim_redemptions", () => {
  it("redeems in request order with dense positions until the limit, and tells the rest it is exhausted", async () => {
    const id = await campaign({ limit: 3 });
    const requests = ["a", "b", "c", "d", "e"].map((user) => request(user));
    const answers = await claim(id, requests);
    expect(answers.map((a) => a.id)).toEqual(requests.map((r) => r.id));
    expect(summary(answers)).toEqual([
      ["redeemed", "1", null],
      ["redeemed", "2", null],
      ["redeemed", "3", null],
      ["exhausted", null, null],
      ["exhausted", null, null],
    ]);
    expect(answers.every((a) => a.redemption_limit === "3")).toBe(true);
    expect(await redeemed(id)).toBe(3);
    const { rows } = await pool.query(
      "select user_id, position::int from redemptions where campaign_id = $1 order by position",
      [id],
    );
    expect(rows).toEqual([
      { user_id: "a", position: 1 },
      { user_id: "b", position: 2 },
      { user_id: "c", position: 3 },
    ]);
  });

  it("tells a user who has their share 'already', also in the same batch and after exhaustion", async () => {
    const id = await campaign({ limit: 2, perUser: 1 });
    expect(summary(await claim(id, [request("winner"), request("winner"), request("other")]))).toEqual([
      ["redeemed", "1", null],
      ["already", null, null],
      ["redeemed", "2", null],
    ]);
    expect(summary(await claim(id, [request("winner"), request("late")]))).toEqual([
      ["already", null, null],
      ["exhausted", null, null],
    ]);
  });

  it("lets a user redeem up to the per-user limit", async () => {
    const id = await campaign({ perUser: 2 });
    expect(
      summary(await claim(id, [request("twice"), request("twice"), request("twice")])).map((a) => a[0]),
    ).toEqual(["redeemed", "redeemed", "already"]);
  });

  it("uses a single-use code once", async () => {
    const id = await campaign({ singleUse: true });
    const code = randomUUID();
    await pool.query("insert into codes (id, campaign_id, hash) values ($1, $2, $3)", [
      code,
      id,
      Buffer.from(code),
    ]);
    expect(summary(await claim(id, [request("first", code), request("second", code)]))).toEqual([
      ["redeemed", "1", null],
      ["already", null, "code used"],
    ]);
    const { rows } = await pool.query("select redeemed_by from codes where id = $1", [code]);
    expect(rows).toEqual([{ redeemed_by: "first" }]);
    expect(await redeemed(id)).toBe(1);
  });

  it("refuses every request of an inactive campaign with the reason, and writes nothing", async () => {
    const cases: [CampaignSpec, string][] = [
      [{ status: status.notActivated }, "the campaign has not been activated"],
      [{ status: status.paused }, "the campaign is paused"],
      [{ status: status.ended }, "the campaign has ended"],
      [{ startsAt: hours(1), endsAt: hours(2) }, "the campaign has not started"],
      [{ startsAt: hours(-2), endsAt: hours(-1) }, "the campaign has expired"],
    ];
    for (const [spec, reason] of cases) {
      const id = await campaign(spec);
      expect(summary(await claim(id, [request("x"), request("y")]))).toEqual([
        ["inactive", null, reason],
        ["inactive", null, reason],
      ]);
      expect(await redeemed(id)).toBe(0);
    }
    const unknown = await claim(randomUUID(), [request("x")]);
    expect(unknown.map((a) => [a.outcome, a.reason, a.redemption_limit])).toEqual([
      ["inactive", "unknown campaign", "0"],
    ]);
  });

  it("moves the counter and its change time once per batch, and only when something was redeemed", async () => {
    const id = await campaign({ limit: 1 });
    const changedAt = async () =>
      (await pool.query("select changed_at from campaigns where id = $1", [id])).rows[0].changed_at;
    const before = await changedAt();
    await claim(id, [request("one")]);
    const afterRedeem = await changedAt();
    expect(afterRedeem.getTime()).toBeGreaterThan(before.getTime());
    await claim(id, [request("two")]);
    expect((await changedAt()).getTime()).toBe(afterRedeem.getTime());
  });

  it("redeems exactly the limit for distinct users under concurrent batches", async () => {
    const id = await campaign({ limit: 50 });
    const batches = Array.from({ length: 16 }, (_, b) =>
      Array.from({ length: 8 }, (_, i) => request(`crowd-${b}-${i}`)),
    );
    const answers = (await Promise.all(batches.map((batch) => claim(id, batch)))).flat();
    const won = answers.filter((a) => a.outcome === "redeemed");
    expect(won).toHaveLength(50);
    expect(won.map((a) => Number(a.position)).sort((x, y) => x - y)).toEqual(
      Array.from({ length: 50 }, (_, i) => i + 1),
    );
    expect(answers.filter((a) => a.outcome === "exhausted")).toHaveLength(16 * 8 - 50);
    expect(await redeemed(id)).toBe(50);
  });

  it("gives a key its redemption back, before the window, the status, the share and exhaustion", async () => {
    const id = await campaign({ limit: 2, perUser: 3 });
    const first = request("keyed", null, "k1");
    const [won] = await claim(id, [first]);
    expect(won).toMatchObject({ outcome: "redeemed", position: "1", redemption_id: first.id });
    // The retry, with a new request id, in a batch with a second request of the same key.
    const retry = request("keyed", null, "k1");
    const replays = await claim(id, [retry, request("keyed", null, "k1")]);
    for (const replay of replays)
      expect(replay).toMatchObject({
        outcome: "replayed",
        position: "1",
        redemption_id: first.id,
        redeemed_at: won!.redeemed_at,
        redemption_limit: "2",
      });
    expect(replays[0]!.id).toBe(retry.id);
    // Another key of the same user takes a second slot; the key after exhaustion, after the end
    // of the window, with the campaign paused: still the same redemption.
    expect(summary(await claim(id, [request("keyed", null, "k2"), request("keyed", null, "k3")]))).toEqual([
      ["redeemed", "2", null],
      ["exhausted", null, null],
    ]);
    await pool.query("update campaigns set status = $2 where id = $1", [id, status.paused]);
    const late = new Date(Date.now() + 2 * 3600_000);
    expect(summary(await claim(id, [request("keyed", null, "k1")], late))).toEqual([["replayed", "1", null]]);
    expect(await redeemed(id)).toBe(2);
    const { rows } = await pool.query("select count(*)::int as n from redemptions where campaign_id = $1", [
      id,
    ]);
    expect(rows[0].n).toBe(2);
  });

  it("refuses a key that redeemed another code or campaign, and writes nothing", async () => {
    const cards = await campaign({ singleUse: true, limit: 2 });
    const [one, two] = [randomUUID(), randomUUID()];
    for (const code of [one, two])
      await pool.query("insert into codes (id, campaign_id, hash) values ($1, $2, $3)", [
        code,
        cards,
        Buffer.from(code),
      ]);
    const shared = await campaign();
    expect(summary(await claim(cards, [request("reuser", one, "same")]))).toEqual([["redeemed", "1", null]]);
    expect(summary(await claim(cards, [request("reuser", two, "same")]))).toEqual([["conflict", null, null]]);
    expect(summary(await claim(shared, [request("reuser", null, "same")]))).toEqual([
      ["conflict", null, null],
    ]);
    // Keys are the user's own: another user's equal key is another request.
    expect(summary(await claim(shared, [request("neighbour", null, "same")]))).toEqual([
      ["redeemed", "1", null],
    ]);
    expect(await redeemed(cards)).toBe(1);
    const { rows } = await pool.query("select redeemed_by from codes where id = $1", [two]);
    expect(rows).toEqual([{ redeemed_by: null }]);
  });
});
