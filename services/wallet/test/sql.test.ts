// Proves post_transfers itself (sql/post_transfers.sql), called with SQL on a migrated wallet
// schema, without the service: each outcome (committed, replayed, conflict, insufficient,
// unknown_asset, duplicate_event), order within a batch, refusals that change nothing and fail
// no neighbour, balances never below zero, one shard per system account per batch, journal and
// outbox rows for committed transfers only, and the lock that makes a concurrent copy of a
// carried event a refusal of that item instead of a failed batch.
import { randomUUID } from "node:crypto";
import { openDatabase } from "@ovation/db";
import { type MigratedSchema, migratedSchema } from "@ovation/db/testing";
import { type TestEnvironment, testEnvironment, waitFor } from "@ovation/testkit";
import type pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { walletMigrations } from "../src/store/migrations.ts";

const systemShards = 4;

let env: TestEnvironment;
let pool: pg.Pool;
let schema: MigratedSchema;

beforeAll(async () => {
  env = await testEnvironment();
  schema = await migratedSchema(env.databaseUrl, "wallet", walletMigrations, 6);
  ({ pool } = schema);
  await pool.query("insert into assets (code) values ('COIN'), ('TOMAN')");
});
afterAll(async () => {
  await schema?.close();
  await env?.[Symbol.asyncDispose]();
});

interface Request {
  id: string;
  debit: string;
  credit: string;
  asset: string;
  amount: string;
  kind: number;
  reference: string;
  metadata: Record<string, unknown>;
  hold_id: string | null;
  key: string;
  hash: string;
  created_at: string;
  carried_event_id: string | null;
  requested_by: string;
  events: {
    event_id: string;
    subject: string;
    type: string;
    payload: string;
    headers: Record<string, string>;
  }[];
}

interface Outcome {
  idx: number;
  outcome: string;
  transfer_id: string | null;
  debit_balance: string | null;
  created_at: Date | null;
}

/** A transfer request as the wallet sends it, with one outbox event of its own. */
function request(debit: string, credit: string, amount: number, fields: Partial<Request> = {}): Request {
  const id = randomUUID();
  return {
    id,
    debit,
    credit,
    asset: "COIN",
    amount: String(amount),
    kind: 5,
    reference: "",
    metadata: {},
    hold_id: null,
    key: randomUUID(),
    hash: `${debit}>${credit}:${amount}`
      .split("")
      .map((c) => c.charCodeAt(0).toString(16))
      .join(""),
    created_at: new Date().toISOString(),
    carried_event_id: null,
    requested_by: "test",
    events: [{ event_id: id, subject: "wallet.transfer.committed", type: "t", payload: "CgsM", headers: {} }],
    ...fields,
  };
}

async function post(batch: readonly Request[], client: pg.ClientBase | pg.Pool = pool): Promise<Outcome[]> {
  const { rows } = await client.query<Outcome>("select * from post_transfers($1::jsonb, $2::int)", [
    JSON.stringify(batch),
    systemShards,
  ]);
  return rows;
}

const outcomesOf = (rows: readonly Outcome[]) => rows.map((row) => row.outcome);

async function balance(owner: string, asset = "COIN"): Promise<bigint | undefined> {
  const { rows } = await pool.query<{ balance: string }>(
    "select sum(balance)::text as balance from accounts where owner = $1 and asset = $2 having count(*) > 0",
    [owner, asset],
  );
  return rows[0] === undefined ? undefined : BigInt(rows[0].balance);
}

async function count(sql: string, values: unknown[] = []): Promise<number> {
  return (await pool.query<{ n: number }>(sql, values)).rows[0]!.n;
}

/** Mints `amount` to a fresh user and returns the user's account owner. */
async function fundedUser(amount: number): Promise<string> {
  const owner = `user:${randomUUID()}`;
  expect(outcomesOf(await post([request("system:mint", owner, amount)]))).toEqual(["committed"]);
  return owner;
}

describe("post_transfers", () => {
  it("commits a transfer: balances, journal row, outbox rows, and the debited user's balance", async () => {
    const alice = await fundedUser(100);
    const send = request(alice, "system:gifts-in-transit", 30, {
      reference: "r",
      metadata: { gift: "rose" },
    });
    const [outcome] = await post([send]);
    expect(outcome).toMatchObject({
      idx: 1,
      outcome: "committed",
      transfer_id: send.id,
      debit_balance: "70",
    });
    expect(outcome!.created_at!.toISOString()).toBe(send.created_at);
    expect(await balance(alice)).toBe(70n);
    expect(await balance("system:gifts-in-transit")).toBe(30n);
    const { rows } = await pool.query("select * from transfers where id = $1", [send.id]);
    expect(rows[0]).toMatchObject({
      debit_owner: alice,
      credit_owner: "system:gifts-in-transit",
      amount: "30",
      kind: 5,
      reference: "r",
      metadata: { gift: "rose" },
      debit_balance: "70",
      idempotency_key: send.key,
      requested_by: "test",
    });
    expect(rows[0].request_hash.toString("hex")).toBe(send.hash);
    expect(await count("select count(*)::int as n from outbox where event_id = $1", [send.id])).toBe(1);
  });

  it("reports no debit balance when a system account pays, and lets system shards go below zero", async () => {
    const bob = `user:${randomUUID()}`;
    const [outcome] = await post([request("system:revenue", bob, 5)]);
    expect(outcome).toMatchObject({ outcome: "committed", debit_balance: null });
    expect(await balance("system:revenue")).toBe(-5n);
  });

  it("replays a key used before with the same request, earlier or in the same batch, and refuses it with another", async () => {
    const carol = await fundedUser(100);
    const first = request(carol, "system:revenue", 10);
    const [committed] = await post([first]);
    const again = await post([
      { ...first, id: randomUUID() },
      { ...first, id: randomUUID(), hash: "ff" },
    ]);
    expect(again).toMatchObject([
      { outcome: "replayed", transfer_id: first.id, debit_balance: "90", created_at: committed!.created_at },
      { outcome: "conflict", transfer_id: null, debit_balance: null, created_at: null },
    ]);

    const inBatch = request(carol, "system:revenue", 20);
    const batch = await post([
      inBatch,
      { ...inBatch, id: randomUUID() },
      { ...inBatch, id: randomUUID(), hash: "ee" },
    ]);
    expect(batch).toMatchObject([
      { outcome: "committed", transfer_id: inBatch.id, debit_balance: "70" },
      { outcome: "replayed", transfer_id: inBatch.id, debit_balance: "70" },
      { outcome: "conflict", transfer_id: null },
    ]);
    expect(await balance(carol)).toBe(70n);
    expect(
      await count("select count(*)::int as n from transfers where idempotency_key = $1", [inBatch.key]),
    ).toBe(1);
  });

  it("tries a key again when its first request in the batch was refused", async () => {
    const dave = await fundedUser(10);
    const key = randomUUID();
    const batch = await post([
      request(dave, "system:revenue", 50, { key }),
      request("system:mint", dave, 40),
      request(dave, "system:revenue", 50, { key }),
      request(dave, "system:revenue", 50, { key }),
    ]);
    expect(outcomesOf(batch)).toEqual(["insufficient", "committed", "committed", "replayed"]);
    expect(batch[3]!.transfer_id).toBe(batch[2]!.transfer_id);
    expect(await balance(dave)).toBe(0n);
  });

  it("refuses an overdraft and an unknown user without creating an account", async () => {
    const erin = await fundedUser(10);
    const nobody = `user:${randomUUID()}`;
    expect(
      outcomesOf(await post([request(erin, "system:revenue", 11), request(nobody, "system:revenue", 1)])),
    ).toEqual(["insufficient", "insufficient"]);
    expect(await balance(erin)).toBe(10n);
    expect(await balance(nobody)).toBeUndefined();
  });

  it("refuses an unknown asset", async () => {
    const frank = `user:${randomUUID()}`;
    const [outcome] = await post([request("system:mint", frank, 1, { asset: "GOLD" })]);
    expect(outcome).toMatchObject({ outcome: "unknown_asset", transfer_id: null });
    expect(await balance(frank, "GOLD")).toBeUndefined();
  });

  it("refuses a second transfer carrying the same event, journaled before or earlier in the batch, and that one only", async () => {
    const grace = await fundedUser(100);
    const event = randomUUID();
    expect(
      outcomesOf(await post([request(grace, "system:gifts-in-transit", 1, { carried_event_id: event })])),
    ).toEqual(["committed"]);
    const later = randomUUID();
    const batch = await post([
      request(grace, "system:gifts-in-transit", 2, { carried_event_id: event }),
      request(grace, "system:gifts-in-transit", 3, { carried_event_id: later }),
      request(grace, "system:gifts-in-transit", 4),
      request(grace, "system:gifts-in-transit", 5, { carried_event_id: later }),
    ]);
    expect(outcomesOf(batch)).toEqual(["duplicate_event", "committed", "committed", "duplicate_event"]);
    expect(batch[2]!.debit_balance).toBe("92");
    expect(await balance(grace)).toBe(92n);
    expect(
      await count("select count(*)::int as n from transfers where carried_event_id = any($1)", [
        [event, later],
      ]),
    ).toBe(2);
  });

  it("lets an event refused with its first transfer be carried by a later one in the batch", async () => {
    const heidi = await fundedUser(5);
    const event = randomUUID();
    const batch = await post([
      request(heidi, "system:gifts-in-transit", 6, { carried_event_id: event }),
      request(heidi, "system:gifts-in-transit", 5, { carried_event_id: event }),
    ]);
    expect(outcomesOf(batch)).toEqual(["insufficient", "committed"]);
  });

  it("applies a batch in order: a later transfer spends what an earlier one left or credited", async () => {
    const ivan = await fundedUser(10);
    const judy = `user:${randomUUID()}`;
    const batch = await post([
      request(ivan, judy, 10), // ivan 0, judy 10
      request(judy, "system:revenue", 11), // judy has only 10
      request(judy, ivan, 4), // judy 6, ivan 4
      request(ivan, "system:revenue", 4), // ivan 0
      request(ivan, "system:revenue", 1), // nothing left
      request(judy, "system:revenue", 6), // judy 0
    ]);
    expect(outcomesOf(batch)).toEqual([
      "committed",
      "insufficient",
      "committed",
      "committed",
      "insufficient",
      "committed",
    ]);
    expect(batch.map((row) => row.debit_balance)).toEqual(["0", null, "6", "0", null, "0"]);
    expect(batch.map((row) => row.idx)).toEqual([1, 2, 3, 4, 5, 6]);
    expect(await balance(ivan)).toBe(0n);
    expect(await balance(judy)).toBe(0n);
  });

  it("writes journal and outbox rows for the committed transfers only, events in request order, and refusals fail no neighbour", async () => {
    const kim = await fundedUser(10);
    const twoEvents = request(kim, "system:gifts-in-transit", 3);
    twoEvents.events.push({
      event_id: randomUUID(),
      subject: "gift.gift.sent",
      type: "g",
      payload: "CAE=",
      headers: {},
    });
    const used = await fundedUser(1);
    const usedRequest = request(used, "system:revenue", 1);
    await post([usedRequest]);
    const batch = [
      request(kim, "system:gifts-in-transit", 2),
      request(kim, "system:gifts-in-transit", 100), // insufficient
      { ...usedRequest, id: randomUUID(), hash: "00" }, // conflict
      request(kim, "system:revenue", 1, { asset: "GOLD" }), // unknown asset
      twoEvents,
      request(kim, "system:revenue", 5),
    ];
    const outboxBefore = await count("select coalesce(max(id), 0)::int as n from outbox");
    const outcomes = await post(batch);
    expect(outcomesOf(outcomes)).toEqual([
      "committed",
      "insufficient",
      "conflict",
      "unknown_asset",
      "committed",
      "committed",
    ]);
    const committed = [batch[0]!, batch[4]!, batch[5]!];
    const { rows: journal } = await pool.query("select id from transfers where id = any($1)", [
      batch.map((r) => r.id),
    ]);
    expect(journal.map((row) => row.id).sort()).toEqual(committed.map((r) => r.id).sort());
    const { rows: outbox } = await pool.query("select event_id from outbox where id > $1 order by id", [
      outboxBefore,
    ]);
    expect(outbox.map((row) => row.event_id)).toEqual(
      committed.flatMap((r) => r.events.map((e) => e.event_id)),
    );
    expect(await balance(kim)).toBe(0n);
  });

  it("moves one shard of each system account per batch", async () => {
    const owner = `system:pool-${randomUUID().slice(0, 8)}`;
    for (let batch = 0; batch < 5; batch++) {
      const users = Array.from({ length: 8 }, () => `user:${randomUUID()}`);
      const before = await pool.query("select shard, balance from accounts where owner = $1", [owner]);
      await post(users.map((user) => request(owner, user, 1)));
      const after = await pool.query("select shard, balance from accounts where owner = $1", [owner]);
      const changed = after.rows.filter(
        (row) => before.rows.find((old) => old.shard === row.shard)?.balance !== row.balance,
      );
      expect(changed).toHaveLength(1);
    }
    expect(
      await count("select count(*)::int as n from accounts where owner = $1 and shard >= $2", [
        owner,
        systemShards,
      ]),
    ).toBe(0);
    expect(await balance(owner)).toBe(-40n);
  });

  it("never takes a user below zero, and conserves money, under concurrent random batches", async () => {
    const users = await Promise.all(Array.from({ length: 6 }, () => fundedUser(20)));
    const pick = () => users[Math.floor(Math.random() * users.length)]!;
    const batches = Array.from({ length: 24 }, () =>
      Array.from({ length: 16 }, () => {
        const debit = pick();
        const credit = Math.random() < 0.5 ? pick() : "system:revenue";
        return request(
          debit,
          credit === debit ? "system:revenue" : credit,
          1 + Math.floor(Math.random() * 15),
        );
      }),
    );
    const results = await Promise.all(batches.map((batch) => post(batch)));
    const outcomes = results.flat().map((row) => row.outcome);
    expect(new Set(outcomes)).toEqual(new Set(["committed", "insufficient"]));
    for (const user of users) expect(await balance(user)).toBeGreaterThanOrEqual(0n);
    const { rows } = await pool.query<{ total: string }>(
      "select sum(balance)::text as total from accounts where asset = 'COIN'",
    );
    expect(rows[0]!.total).toBe("0");
    // Every balance equals what the journal says moved in and out of it.
    const { rows: drift } = await pool.query(`
      select a.owner from (select owner, sum(balance) as balance from accounts where asset = 'COIN' group by owner) a
      left join (select owner, sum(amount) as net from (
                   select credit_owner as owner, amount from transfers where asset = 'COIN'
                   union all select debit_owner, -amount from transfers where asset = 'COIN') m group by owner) j
        using (owner)
      where a.balance <> coalesce(j.net, 0)`);
    expect(drift).toEqual([]);
  });

  it("makes a concurrent copy of a carried event wait, then refuses that item alone", async () => {
    const lena = await fundedUser(10);
    const event = randomUUID();
    const first = await pool.connect();
    const second = await pool.connect();
    try {
      await first.query("begin");
      expect(
        outcomesOf(
          await post([request(lena, "system:gifts-in-transit", 1, { carried_event_id: event })], first),
        ),
      ).toEqual(["committed"]);
      const secondPid = (await second.query("select pg_backend_pid() as pid")).rows[0].pid;
      const unrelated = request(lena, "system:revenue", 2);
      const copy = post(
        [request(lena, "system:gifts-in-transit", 1, { carried_event_id: event }), unrelated],
        second,
      );
      await waitFor(
        async () =>
          (await count(
            "select count(*)::int as n from pg_locks where pid = $1 and locktype = 'advisory' and not granted",
            [secondPid],
          )) === 1,
        { what: "the copy to wait for the first transaction's lock on the event" },
      );
      await first.query("commit");
      expect(outcomesOf(await copy)).toEqual(["duplicate_event", "committed"]);
      expect(await balance(lena)).toBe(7n);
    } finally {
      first.release();
      second.release();
    }
  });

  it("looks keys and carried events up by index, however few transfers there were when its session planned it (0053)", async () => {
    // A session of its own: PL/pgSQL keeps the plans it makes on a connection's first calls.
    const client = await pool.connect();
    try {
      const alice = await fundedUser(1_000);
      const batch = async () => {
        const requests = Array.from({ length: 8 }, () =>
          request(alice, "system:gifts-in-transit", 1, { carried_event_id: randomUUID() }),
        );
        expect(new Set(outcomesOf(await post(requests, client)))).toEqual(new Set(["committed"]));
      };
      // The transaction's own counters: a sequential scan of `transfers` would read every
      // transfer ever made on each batch.
      const scans = async () =>
        Number(
          (
            await client.query<{ seq_scan: string }>(
              "select seq_scan from pg_stat_xact_user_tables where relid = 'transfers'::regclass",
            )
          ).rows[0]?.seq_scan ?? 0,
        );
      await client.query("begin");
      // The first calls make the plans the session keeps (PL/pgSQL tries custom plans first,
      // then keeps a generic one; a session's very first call was seen to scan once, in one CI
      // run of many): the calls after them must find their keys by index.
      for (let n = 0; n < 6; n++) await batch();
      const before = await scans();
      for (let n = 0; n < 4; n++) await batch();
      expect((await scans()) - before).toBe(0);
    } finally {
      await client.query("rollback");
      client.release();
    }
  });

  it("answers an empty batch with nothing", async () => {
    expect(await post([])).toEqual([]);
  });
});

describe("a database that ran the migrations of function bodies", () => {
  it("gets the record-type post_transfers in the start-up that runs the new migration", async () => {
    // 0001..0006 as they ran before (the steps keep their names), then post_transfers as 0005
    // left it: returning a table of its own columns, which cannot be replaced in place.
    const before = await openDatabase({
      url: env.databaseUrl,
      schema: "wallet_upgrade",
      entities: [],
      migrations: walletMigrations.slice(0, 6),
      functions: [],
    });
    await before.close();
    await pool.query(`create function wallet_upgrade.post_transfers(p_batch jsonb, p_system_shards int)
      returns table (idx int, outcome text, transfer_id uuid, debit_balance bigint, created_at timestamptz)
      language sql as $$ select 1, 'old', null::uuid, null::bigint, null::timestamptz $$`);
    const after = await openDatabase({
      url: env.databaseUrl,
      schema: "wallet_upgrade",
      entities: [],
      migrations: walletMigrations,
    });
    await after.close();
    const { rows } = await pool.query(
      `select p.oid::regprocedure::text as signature, pg_get_function_result(p.oid) as result
       from pg_proc p where p.pronamespace = 'wallet_upgrade'::regnamespace and p.proname like 'post_transfer%'`,
    );
    expect(rows).toEqual([
      {
        signature: "wallet_upgrade.post_transfers(jsonb,integer)",
        result: "SETOF wallet_upgrade.transfer_outcome",
      },
    ]);
    await pool.query("insert into wallet_upgrade.assets (code) values ('COIN')");
    const { rows: outcomes } = await pool.query("select * from wallet_upgrade.post_transfers($1::jsonb, 1)", [
      JSON.stringify([request("system:mint", "user:upgraded", 1)]),
    ]);
    expect(outcomes.map((row) => row.outcome)).toEqual(["committed"]);
  });
});
