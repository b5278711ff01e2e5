// Proves the PK scoring functions themselves (sql/score_gifts.sql, sql/count_window.sql), called
// with SQL on a migrated pk schema, without the service: what counts, what is kept for a bonus
// round, late gifts, bonus multipliers, forfeits, redelivery, count_window after an extension,
// and (issue 19) that scoring locks only running battles: a settled battle locked by someone
// else does not hold up a gift to its host's running battle.
import { randomUUID } from "node:crypto";
import { type MigratedSchema, migratedSchema } from "@ovation/db/testing";
import { type TestEnvironment, testEnvironment } from "@ovation/testkit";
import type pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { pkMigrations } from "../src/store/migrations.ts";

// pk.v1 enum values as the schema stores them.
const state = { active: 2, bonusRound: 3, ended: 4, settled: 5 } as const;
const participant = { accepted: 2, forfeited: 4 } as const;

let env: TestEnvironment;
let pool: pg.Pool;
let schema: MigratedSchema;

beforeAll(async () => {
  env = await testEnvironment();
  schema = await migratedSchema(env.databaseUrl, "pk", pkMigrations, 4);
  ({ pool } = schema);
});
afterAll(async () => {
  await schema?.close();
  await env?.[Symbol.asyncDispose]();
});

const minutes = (n: number) => new Date(Date.now() + n * 60_000);

interface BattleSpec {
  state: number;
  startedAt: Date;
  endsAt: Date;
  /** Host ids of side 1 and side 2. */
  sides: [string, string];
}

/** A battle row and its two hosts, as the service leaves them in `spec.state`. */
async function battle(spec: BattleSpec): Promise<string> {
  const id = randomUUID();
  await pool.query(
    `insert into battles (id, mode, state, created_by, idempotency_key, request_hash, duration_seconds, tie_policy,
                          bonus_round_seconds, bonus_rounds_max, created_at, started_at, ends_at, settled_at)
     values ($1, 1, $2::smallint, $3, $4, '\\x00', 60, 1, 10, 1, $5::timestamptz, $5, $6::timestamptz, case when $2::smallint = 5 then $6 end)`,
    [id, spec.state, spec.sides[0], randomUUID(), spec.startedAt, spec.endsAt],
  );
  for (const [index, host] of spec.sides.entries()) {
    await pool.query(
      "insert into battle_hosts (battle_id, host_id, side, status, busy) values ($1, $2, $3, $4, $5)",
      [id, host, index + 1, participant.accepted, spec.state !== state.settled],
    );
  }
  return id;
}

const hosts = (): [string, string] => [
  `host-${randomUUID().slice(0, 8)}`,
  `host-${randomUUID().slice(0, 8)}`,
];

interface Gift {
  send_id: string;
  host_id: string;
  sender_id: string;
  gift_id: string;
  pk_points: string;
  committed_at: string;
}

const gift = (host: string, at: Date, fields: Partial<Gift> = {}): Gift => ({
  send_id: randomUUID(),
  host_id: host,
  sender_id: "fan",
  gift_id: "rose",
  pk_points: "10",
  committed_at: at.toISOString(),
  ...fields,
});

interface Scored {
  battle_id: string;
  send_id: string;
  side: number;
  points: string;
  counted: boolean;
  late: boolean;
}

async function score(gifts: readonly Gift[], client: pg.ClientBase | pg.Pool = pool): Promise<Scored[]> {
  return (await client.query<Scored>("select * from score_gifts($1::jsonb)", [JSON.stringify(gifts)])).rows;
}

async function totals(battleId: string) {
  const { rows } = await pool.query(
    "select score_a::int, score_b::int, late_a::int, late_b::int from battles where id = $1",
    [battleId],
  );
  return rows[0];
}

async function hostPoints(battleId: string): Promise<Record<string, number>> {
  const { rows } = await pool.query("select host_id, points::int from battle_hosts where battle_id = $1", [
    battleId,
  ]);
  return Object.fromEntries(rows.map((row) => [row.host_id, row.points]));
}

async function supporters(battleId: string): Promise<{ side: number; user_id: string; points: number }[]> {
  const { rows } = await pool.query(
    "select side, user_id, points::int from battle_supporters where battle_id = $1 order by side, user_id",
    [battleId],
  );
  return rows;
}

describe("score_gifts", () => {
  it("counts a gift committed inside a running battle's window, on its side, for its host and sender", async () => {
    const [a, b] = hosts();
    const id = await battle({
      state: state.active,
      startedAt: minutes(-1),
      endsAt: minutes(1),
      sides: [a, b],
    });
    const scored = await score([
      gift(a, minutes(0)),
      gift(b, minutes(0), { pk_points: "7", sender_id: "other" }),
      gift(b, minutes(0), { pk_points: "3", sender_id: "other" }),
    ]);
    expect(scored.map((row) => [row.side, row.points, row.counted, row.late])).toEqual([
      [1, "10", true, false],
      [2, "7", true, false],
      [2, "3", true, false],
    ]);
    expect(await totals(id)).toEqual({ score_a: 10, score_b: 10, late_a: 0, late_b: 0 });
    expect(await hostPoints(id)).toEqual({ [a]: 10, [b]: 10 });
    expect(await supporters(id)).toEqual([
      { side: 1, user_id: "fan", points: 10 },
      { side: 2, user_id: "other", points: 10 },
    ]);
  });

  it("reaches its hosts' battles by index, however few battles there were when its session planned it (0053)", async () => {
    const [a, b] = hosts();
    await battle({ state: state.active, startedAt: minutes(-1), endsAt: minutes(1), sides: [a, b] });
    // A session of its own: PL/pgSQL keeps the plans it makes on a connection's first calls.
    const client = await pool.connect();
    try {
      // The transaction's own counters: a sequential scan would read every battle ever fought.
      const scans = async () =>
        (
          await client.query<{ relname: string; seq_scan: string }>(
            "select relname, seq_scan from pg_stat_xact_user_tables where relname in ('battles', 'battle_hosts') order by relname",
          )
        ).rows.map((row) => [row.relname, Number(row.seq_scan)] as const);
      const scoreOnce = () => score([gift(a, minutes(0)), gift(b, minutes(0))], client);
      await client.query("begin");
      // The first calls make the plans the session keeps (PL/pgSQL tries custom plans first,
      // then keeps a generic one): the calls after them must reach the battles by index.
      for (let n = 0; n < 6; n++) await scoreOnce();
      const before = await scans();
      for (let n = 0; n < 4; n++) await scoreOnce();
      expect(await scans()).toEqual(before);
      expect(before.map(([relname]) => relname)).toEqual(["battle_hosts", "battles"]);
    } finally {
      await client.query("rollback");
      client.release();
    }
  });

  it("records a gift once: a redelivered batch adds nothing and returns nothing", async () => {
    const [a, b] = hosts();
    const id = await battle({
      state: state.active,
      startedAt: minutes(-1),
      endsAt: minutes(1),
      sides: [a, b],
    });
    const once = gift(a, minutes(0));
    expect(await score([once])).toHaveLength(1);
    expect(await score([once, once])).toEqual([]);
    expect(await totals(id)).toMatchObject({ score_a: 10 });
  });

  it("ignores a gift from before the start, and keeps one after the end uncounted for a bonus round", async () => {
    const [a, b] = hosts();
    const id = await battle({
      state: state.ended,
      startedAt: minutes(-3),
      endsAt: minutes(-1),
      sides: [a, b],
    });
    const scored = await score([gift(a, minutes(-4)), gift(a, minutes(0))]);
    expect(scored.map((row) => [row.counted, row.late])).toEqual([[false, false]]);
    expect(await totals(id)).toMatchObject({ score_a: 0 });
  });

  it("stores a gift to a settled battle's window as late: reported and totalled apart, never in the score", async () => {
    const [a, b] = hosts();
    const id = await battle({
      state: state.settled,
      startedAt: minutes(-10),
      endsAt: minutes(-5),
      sides: [a, b],
    });
    const scored = await score([gift(b, minutes(-6), { pk_points: "4" }), gift(b, minutes(-4))]);
    expect(scored.map((row) => [row.side, row.counted, row.late])).toEqual([[2, false, true]]);
    expect(await totals(id)).toEqual({ score_a: 0, score_b: 0, late_a: 0, late_b: 4 });
    expect(await supporters(id)).toEqual([]);
  });

  it("stops counting a host's gifts from the moment the host forfeited", async () => {
    const [a, b] = hosts();
    const id = await battle({
      state: state.active,
      startedAt: minutes(-5),
      endsAt: minutes(5),
      sides: [a, b],
    });
    await pool.query(
      "update battle_hosts set status = $1, forfeited_at = $2 where battle_id = $3 and host_id = $4",
      [participant.forfeited, minutes(-1), id, a],
    );
    const scored = await score([gift(a, minutes(-2)), gift(a, minutes(0))]);
    expect(scored.map((row) => row.counted)).toEqual([true, false]);
    expect(await totals(id)).toMatchObject({ score_a: 10 });
  });

  it("multiplies by the highest bonus window in force: for all battles, this battle, or this gift", async () => {
    const [a, b] = hosts();
    const id = await battle({
      state: state.active,
      startedAt: minutes(-5),
      endsAt: minutes(5),
      sides: [a, b],
    });
    const window = (
      multiplier: number,
      from: Date,
      to: Date,
      battleId: string | null,
      giftId: string | null,
    ) =>
      pool.query(
        `insert into bonus_windows (id, multiplier, starts_at, ends_at, battle_id, gift_id, created_by, idempotency_key, request_hash)
         values ($1, $2, $3, $4, $5, $6, 'admin', $7, '\\x00')`,
        [randomUUID(), multiplier, from, to, battleId, giftId, randomUUID()],
      );
    await window(2, minutes(-5), minutes(5), null, null);
    await window(3, minutes(-2), minutes(-1), id, null);
    await window(5, minutes(-5), minutes(5), id, "lion");
    const scored = await score([
      gift(a, minutes(-3)), // all battles: ×2
      gift(a, minutes(-1.5)), // this battle: ×3
      gift(a, minutes(-3), { gift_id: "lion" }), // this gift: ×5
    ]);
    expect(scored.map((row) => row.points)).toEqual(["20", "30", "50"]);
    await pool.query("delete from bonus_windows");
  });

  it("takes no lock on a settled battle: a gift to its host's running battle does not wait for it", async () => {
    const [a, b] = hosts();
    const settled = await battle({
      state: state.settled,
      startedAt: minutes(-30),
      endsAt: minutes(-25),
      sides: [a, b],
    });
    const running = await battle({
      state: state.active,
      startedAt: minutes(-1),
      endsAt: minutes(5),
      sides: [a, b],
    });
    const holder = await pool.connect();
    const scorer = await pool.connect();
    try {
      await holder.query("begin");
      await holder.query("select 1 from battles where id = $1 for update", [settled]);
      await scorer.query("set lock_timeout = '200ms'");
      const scored = await score([gift(a, minutes(0))], scorer);
      expect(scored.map((row) => [row.battle_id, row.counted])).toEqual([[running, true]]);
    } finally {
      await holder.query("rollback");
      await scorer.query("reset lock_timeout");
      holder.release();
      scorer.release();
    }
  });

  it("waits for a running battle that settlement holds, then scores the gift as late", async () => {
    const [a, b] = hosts();
    const id = await battle({
      state: state.ended,
      startedAt: minutes(-5),
      endsAt: minutes(-1),
      sides: [a, b],
    });
    const settlement = await pool.connect();
    try {
      await settlement.query("begin");
      await settlement.query("select 1 from battles where id = $1 for update", [id]);
      const scoring = score([gift(a, minutes(-2))]);
      await settlement.query("update battles set state = $1, settled_at = now() where id = $2", [
        state.settled,
        id,
      ]);
      await settlement.query("update battle_hosts set busy = false where battle_id = $1", [id]);
      await settlement.query("commit");
      expect((await scoring).map((row) => [row.counted, row.late])).toEqual([[false, true]]);
      expect(await totals(id)).toEqual({ score_a: 0, score_b: 0, late_a: 10, late_b: 0 });
    } finally {
      settlement.release();
    }
  });
});

describe("count_window", () => {
  it("counts the kept gifts a bonus round's longer window now holds, except after a forfeit, once", async () => {
    const [a, b] = hosts();
    const id = await battle({
      state: state.ended,
      startedAt: minutes(-5),
      endsAt: minutes(-2),
      sides: [a, b],
    });
    await pool.query(
      "update battle_hosts set status = $1, forfeited_at = $2 where battle_id = $3 and host_id = $4",
      [participant.forfeited, minutes(-0.5), id, b],
    );
    const kept = await score([
      gift(a, minutes(-1)),
      gift(b, minutes(-1), { pk_points: "4" }),
      gift(b, minutes(0), { pk_points: "6" }), // after b forfeited
      gift(a, minutes(2), { pk_points: "1" }), // beyond the bonus round too
    ]);
    expect(kept.every((row) => !row.counted && !row.late)).toBe(true);

    await pool.query("update battles set state = $1, ends_at = $2 where id = $3", [
      state.bonusRound,
      minutes(1),
      id,
    ]);
    await pool.query("select count_window($1)", [id]);
    expect(await totals(id)).toEqual({ score_a: 10, score_b: 4, late_a: 0, late_b: 0 });
    expect(await hostPoints(id)).toEqual({ [a]: 10, [b]: 4 });
    expect(await supporters(id)).toEqual([
      { side: 1, user_id: "fan", points: 10 },
      { side: 2, user_id: "fan", points: 4 },
    ]);

    await pool.query("select count_window($1)", [id]);
    expect(await totals(id)).toMatchObject({ score_a: 10, score_b: 4 });
  });
});
