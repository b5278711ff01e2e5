// Proves the outage/refusal split on real failures of the real server: a connection that
// cannot be made, a connection the server drops, and a backend terminated by an administrator
// are infrastructure errors (UNAVAILABLE); a unique violation, a deadlock and a bad statement
// are not.
import { Code, type ConnectError } from "@connectrpc/connect";
import { FaultProxy, testServers } from "@ovation/testkit";
import pg from "pg";
import { describe, expect, it } from "vitest";
import { isInfrastructureError, isRetryable, mapDatabaseError, retryRaces } from "../src/index.ts";

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
    expect((mapDatabaseError(terminated) as ConnectError).code).toBe(Code.Unavailable);
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
      expect(mapDatabaseError(syntax)).toBe(syntax);
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
