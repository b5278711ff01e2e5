// Proves the outage/refusal split on real failures of the real server: a connection that
// cannot be made, a connection the server drops, and a backend terminated by an administrator
// are infrastructure errors (unavailable); a unique violation, a deadlock and a bad statement
// are not. And that a failure means the same through MikroORM and straight from the pg pool.
import { FaultProxy, testEnvironment, testServers } from "@ovation/testkit";
import pg from "pg";
import { describe, expect, it } from "vitest";
import { databaseError, isInfrastructureError, isRetryable, openDatabase, retryRaces } from "../src/index.ts";

async function failureOf(work: () => Promise<unknown>): Promise<unknown> {
  try {
    await work();
  } catch (error) {
    return error;
  }
  throw new Error("expected a failure");
}

const client = (url = testServers.postgresUrl) => {
  const c = new pg.Client({ connectionString: url, connectionTimeoutMillis: 2_000 });
  c.on("error", () => {});
  return c;
};

describe("database error classification", () => {
  it("calls an unreachable, dropped or terminated connection an outage (503)", async () => {
    await using proxy = await FaultProxy.start(testServers.postgresUrl);
    proxy.cut();
    const refused = await failureOf(() => client(proxy.url(testServers.postgresUrl)).connect());
    expect(isInfrastructureError(refused)).toBe(true);
    proxy.restore();

    const dropped = client(proxy.url(testServers.postgresUrl));
    await dropped.connect();
    proxy.reset();
    expect(isInfrastructureError(await failureOf(() => dropped.query("select 1")))).toBe(true);

    const victim = client();
    await victim.connect();
    const { rows } = await victim.query<{ pid: number }>("select pg_backend_pid() as pid");
    const admin = client();
    await admin.connect();
    await admin.query("select pg_terminate_backend($1)", [rows[0]!.pid]);
    await admin.end();
    const terminated = await failureOf(() => victim.query("select 1"));
    expect(isInfrastructureError(terminated)).toBe(true);
    expect(databaseError(terminated)).toMatchObject({ code: "unavailable", kind: "unavailable" });
  });

  it("does not call a refused statement an outage", async () => {
    const c = client();
    await c.connect();
    try {
      await c.query("create temporary table t (id int primary key)");
      await c.query("insert into t values (1)");
      const duplicate = await failureOf(() => c.query("insert into t values (1)"));
      expect(isInfrastructureError(duplicate)).toBe(false);
      const syntax = await failureOf(() => c.query("select from where"));
      expect(isInfrastructureError(syntax)).toBe(false);
      // A bad statement is a bug, not an operating error: it answers INTERNAL.
      expect(databaseError(syntax)).toBeUndefined();
    } finally {
      await c.end();
    }
  });

  it("retries a transaction that lost a real deadlock, and passes other errors through at once", async () => {
    const deadlock = await realDeadlock();
    expect(isRetryable(deadlock)).toBe(true);
    expect(isInfrastructureError(deadlock)).toBe(false);
    let attempts = 0;
    const result = await retryRaces(async () => {
      attempts++;
      if (attempts === 1) throw deadlock;
      return "committed";
    });
    expect({ result, attempts }).toEqual({ result: "committed", attempts: 2 });

    let refusedAttempts = 0;
    const refusal = new Error("not a race");
    await expect(
      retryRaces(async () => {
        refusedAttempts++;
        throw refusal;
      }),
    ).rejects.toBe(refusal);
    expect(refusedAttempts).toBe(1);
  });
});

describe("one classification for both paths", () => {
  it("maps unique and check violations, timeouts and lost races the same through MikroORM and the pg pool", async () => {
    await using env = await testEnvironment();
    const orm = await openDatabase({
      url: env.databaseUrl,
      schema: "errors_test",
      entities: [],
      migrations: [],
    });
    const raw = client(env.databaseUrl);
    await raw.connect();
    try {
      await raw.query(
        "create table errors_test.t (id int primary key, amount int not null constraint amount_not_negative check (amount >= 0))",
      );
      await raw.query("insert into errors_test.t values (1, 0)");
      const em = orm.em.fork();
      const cases: [string, string, string | undefined][] = [
        ["insert into errors_test.t values (1, 0)", "unique_violation", "t_pkey"],
        ["update errors_test.t set amount = -1", "constraint_violation", "amount_not_negative"],
        ["set local statement_timeout = 20; select pg_sleep(1)", "timed_out", undefined],
        // A NUL in text: bad input (400), never an outage to retry (it answered 503 once).
        ["select convert_from('\\x6100'::bytea, 'UTF8')", "invalid_value", undefined],
      ];
      for (const [sql, code, constraint] of cases) {
        const viaPool = databaseError(await failureOf(() => raw.query(`begin; ${sql}; commit`)));
        await raw.query("rollback");
        const viaOrm = databaseError(await failureOf(() => em.transactional((tx) => tx.execute(sql))));
        for (const mapped of [viaPool, viaOrm]) {
          expect(mapped, sql).toMatchObject({ domain: "database", code });
          if (constraint !== undefined) expect(mapped?.details, sql).toEqual({ constraint });
        }
      }
      // A lock held past lock_timeout: busy, retry (unavailable), on either path.
      const holder = client(env.databaseUrl);
      await holder.connect();
      await holder.query("begin; select * from errors_test.t for update");
      try {
        const locked = "set local lock_timeout = 20; update errors_test.t set amount = 1";
        expect(databaseError(await failureOf(() => raw.query(`begin; ${locked}`)))).toMatchObject({
          code: "timed_out",
          kind: "unavailable",
        });
        await raw.query("rollback");
        expect(
          databaseError(await failureOf(() => em.transactional((tx) => tx.execute(locked)))),
        ).toMatchObject({
          code: "timed_out",
        });
      } finally {
        await holder.query("rollback");
        await holder.end();
      }
      expect(databaseError(await realDeadlock())).toMatchObject({ code: "lost_race", kind: "aborted" });
    } finally {
      await raw.end();
      await orm.close();
    }
  });
});

/** Two transactions lock two rows in opposite order; Postgres aborts one with 40P01. */
async function realDeadlock(): Promise<unknown> {
  const setup = client();
  await setup.connect();
  const table = `deadlock_${process.pid}_${Date.now()}`;
  await setup.query(`create table ${table} (id int primary key)`);
  await setup.query(`insert into ${table} values (1), (2)`);
  const [a, b] = [client(), client()];
  await Promise.all([a.connect(), b.connect()]);
  try {
    await a.query("begin");
    await b.query("begin");
    await a.query(`select * from ${table} where id = 1 for update`);
    await b.query(`select * from ${table} where id = 2 for update`);
    const outcomes = await Promise.allSettled([
      a.query(`select * from ${table} where id = 2 for update`),
      b.query(`select * from ${table} where id = 1 for update`),
    ]);
    const failed = outcomes.find((outcome) => outcome.status === "rejected");
    if (failed === undefined) throw new Error("expected a deadlock");
    return (failed as PromiseRejectedResult).reason;
  } finally {
    await a.query("rollback").catch(() => {});
    await b.query("rollback").catch(() => {});
    await Promise.all([a.end(), b.end()]);
    await setup.query(`drop table ${table}`);
    await setup.end();
  }
}
