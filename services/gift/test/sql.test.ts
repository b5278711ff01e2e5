// Proves the gift claim functions themselves (sql/claim_send.sql, claim_sends.sql), called with
// SQL on a migrated gift schema, without the service: every outcome of a claim, the combo
// window, concurrent claims of one key and of one streak, and batches in order with refusals
// of their own.
import { randomUUID } from "node:crypto";
import { type MigratedSchema, migratedSchema } from "@ovation/db/testing";
import { type TestEnvironment, testEnvironment } from "@ovation/testkit";
import type pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ClaimItem } from "../src/store/gift-store.ts";
import { giftMigrations } from "../src/store/migrations.ts";

const comboWindowMs = 10_000;

let env: TestEnvironment;
let pool: pg.Pool;
let schema: MigratedSchema;

beforeAll(async () => {
  env = await testEnvironment();
  schema = await migratedSchema(env.databaseUrl, "gift", giftMigrations, 8);
  ({ pool } = schema);
});
afterAll(async () => {
  await schema?.close();
  await env?.[Symbol.asyncDispose]();
});

/** A room of a new host: live (status 1) or ended (2). */
async function room(status: 1 | 2 = 1): Promise<{ id: string; host: string }> {
  const id = randomUUID();
  const host = `host-${id.slice(0, 8)}`;
  await pool.query("insert into rooms (id, host_id, status, started_at) values ($1, $2, $3, now())", [
    id,
    host,
    status,
  ]);
  return { id, host };
}

type Claim = ClaimItem;

const claim = (roomId: string, fields: Partial<Claim> = {}): Claim => ({
  id: randomUUID(),
  sender: "fan",
  key: randomUUID(),
  room: roomId,
  gift: "rose",
  count: 1,
  now: new Date().toISOString(),
  gift_name: "Rose",
  unit_price: "5",
  pk_points: "1",
  animation_key: "rose.webp",
  vip_level: 0,
  ...fields,
});

interface ClaimRow {
  outcome: string;
  id: string | null;
  combo: number | null;
  room_id: string | null;
  host_id: string | null;
  gift_name: string | null;
  unit_price: string | null;
}

async function claimSend(item: Claim, client: pg.Pool | pg.ClientBase = pool): Promise<ClaimRow> {
  const { rows } = await client.query<ClaimRow>(
    "select * from claim_send($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
    [
      item.id,
      item.sender,
      item.key,
      item.room,
      item.gift,
      item.count,
      item.now,
      comboWindowMs,
      item.gift_name,
      item.unit_price,
      item.pk_points,
      item.animation_key,
      item.vip_level,
    ],
  );
  expect(rows).toHaveLength(1);
  return rows[0]!;
}

async function claimSends(items: readonly Claim[]): Promise<(ClaimRow & { idx: number })[]> {
  return (
    await pool.query("select * from claim_sends($1::jsonb, $2)", [JSON.stringify(items), comboWindowMs])
  ).rows;
}

async function streak(sender: string, roomId: string, gift = "rose"): Promise<number | undefined> {
  const { rows } = await pool.query(
    "select streak from combos where sender_id = $1 and room_id = $2 and gift_id = $3",
    [sender, roomId, gift],
  );
  return rows[0]?.streak;
}

const at = (base: Date, ms: number) => new Date(base.getTime() + ms).toISOString();

describe("claim_send", () => {
  it("claims a send in a live room with what its payload is built from, and records it", async () => {
    const live = await room();
    const item = claim(live.id, { gift_name: "Lion", unit_price: "500" });
    const row = await claimSend(item);
    expect(row).toMatchObject({
      outcome: "claimed",
      id: item.id,
      combo: 1,
      room_id: live.id,
      host_id: live.host,
    });
    expect(row).toMatchObject({ gift_name: "Lion", unit_price: "500" });
    expect(
      (await pool.query("select count(*)::int as n from sends where id = $1", [item.id])).rows[0].n,
    ).toBe(1);
  });

  it("answers a retry with the first claim, also after the room ended and the catalog changed, and refuses another request with the key", async () => {
    const live = await room();
    const first = claim(live.id);
    await claimSend(first);
    await pool.query("update rooms set status = 2 where id = $1", [live.id]);
    const retry = await claimSend({ ...first, id: randomUUID(), gift_name: "Renamed", unit_price: "9" });
    expect(retry).toMatchObject({
      outcome: "existing",
      id: first.id,
      gift_name: "Rose",
      unit_price: "5",
      combo: 1,
    });
    const other = await claimSend({ ...first, id: randomUUID(), count: 2 });
    expect(other).toMatchObject({ outcome: "conflict", id: first.id });
    expect(
      (await pool.query("select count(*)::int as n from sends where idempotency_key = $1", [first.key]))
        .rows[0].n,
    ).toBe(1);
  });

  it("refuses an unknown room, an ended room and a host's own gift, and writes nothing", async () => {
    const ended = await room(2);
    const live = await room();
    const refusals = [claim(randomUUID()), claim(ended.id), claim(live.id, { sender: live.host })];
    const rows = [];
    for (const item of refusals) rows.push(await claimSend(item));
    expect(rows.map((row) => [row.outcome, row.id, row.combo])).toEqual([
      ["room_not_found", null, null],
      ["room_not_live", null, null],
      ["self_gift", null, null],
    ]);
    const { rows: sends } = await pool.query("select id from sends where id = any($1)", [
      refusals.map((r) => r.id),
    ]);
    expect(sends).toEqual([]);
    expect(await streak(live.host, live.id)).toBeUndefined();
  });

  it("continues a combo within the window, also for a send stamped just before the previous one, and restarts after it", async () => {
    const live = await room();
    const start = new Date();
    const combos = [];
    for (const ms of [0, 4_000, 3_900, 13_900 + comboWindowMs]) {
      combos.push((await claimSend(claim(live.id, { sender: "streaker", now: at(start, ms) }))).combo);
    }
    expect(combos).toEqual([1, 2, 3, 1]);
    // Another gift is another streak.
    expect(
      (await claimSend(claim(live.id, { sender: "streaker", gift: "lion", now: at(start, 1) }))).combo,
    ).toBe(1);
  });

  it("numbers concurrent sends of one streak 1..N, and gives concurrent copies of one key one claim", async () => {
    const live = await room();
    const burst = await Promise.all(
      Array.from({ length: 8 }, () => claimSend(claim(live.id, { sender: "burst" }))),
    );
    expect(burst.map((row) => row.combo).sort((a, b) => a! - b!)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);

    const copy = claim(live.id, { sender: "copier" });
    const copies = await Promise.all(
      Array.from({ length: 6 }, () => claimSend({ ...copy, id: randomUUID() })),
    );
    expect(new Set(copies.map((row) => row.id)).size).toBe(1);
    expect(copies.filter((row) => row.outcome === "claimed")).toHaveLength(1);
    expect(await streak("copier", live.id)).toBe(1);
  });
});

describe("claim_sends", () => {
  it("claims a batch in order, each with its own outcome, and steps a streak in array order", async () => {
    const live = await room();
    const now = new Date();
    const repeated = claim(live.id, { sender: "batcher", now: at(now, 0) });
    const rows = await claimSends([
      repeated,
      claim(live.id, { sender: "batcher", now: at(now, 1) }),
      claim(randomUUID(), { sender: "batcher" }),
      { ...repeated, id: randomUUID() },
      claim(live.id, { sender: live.host }),
      claim(live.id, { sender: "batcher", now: at(now, 2) }),
    ]);
    expect(rows.map((row) => [row.idx, row.outcome, row.combo])).toEqual([
      [1, "claimed", 1],
      [2, "claimed", 2],
      [3, "room_not_found", null],
      [4, "existing", 1],
      [5, "self_gift", null],
      [6, "claimed", 3],
    ]);
    expect(rows[3]!.id).toBe(repeated.id);
  });
});
