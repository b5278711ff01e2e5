// Regression: a transaction whose connection dies mid-way must give its pooled connection back.
// With kysely 0.29.6 (what MikroORM 7.2.1 pins) a failed ROLLBACK skipped the release, so every
// transaction caught by a database outage leaked a pooled connection, and after an outage as
// long as the pool was wide the service never answered again. The root package.json overrides
// kysely to 0.29.9, which releases in a finally.
//
// And a pooled connection lost while checked out, between two queries (a failover's FATAL
// arrives while a transaction does its own work), must not end the process: pg emits 'error' on
// such a client, and pg-pool listens only on idle ones.
import { FaultProxy, testEnvironment, waitFor } from "@ovation/testkit";
import type pg from "pg";
import { describe, expect, it } from "vitest";
import { databasePool, isInfrastructureError, nativePool, openDatabase } from "../src/index.ts";

describe("connection pool through an outage", () => {
  it("gets back every connection whose transaction died with it, and serves again afterwards", async () => {
    await using env = await testEnvironment();
    await using proxy = await FaultProxy.start(env.databaseUrl);
    const poolMax = 3;
    const orm = await openDatabase({
      url: proxy.url(env.databaseUrl),
      schema: "pool_test",
      entities: [],
      migrations: [],
      poolMax,
    });
    try {
      const pool = await nativePool(orm);
      const slowTransaction = () => orm.em.fork().transactional((em) => em.execute("select pg_sleep(0.3)"));
      // Every connection of the pool is inside a transaction when the database goes away.
      const inFlight = Array.from({ length: poolMax }, () =>
        slowTransaction().then(
          () => "ok",
          () => "failed",
        ),
      );
      await new Promise((resolve) => setTimeout(resolve, 100));
      proxy.cut();
      expect(await Promise.all(inFlight)).toEqual(["failed", "failed", "failed"]);
      expect(pool.totalCount - pool.idleCount).toBe(0);
      proxy.restore();
      await expect(slowTransaction()).resolves.toBeDefined();
    } finally {
      await orm.close();
    }
  });

  it("outlives a connection lost while checked out between two queries, and serves again", async () => {
    await using env = await testEnvironment();
    await using proxy = await FaultProxy.start(env.databaseUrl);
    const pool = databasePool(proxy.url(env.databaseUrl), { max: 2 });
    pool.on("error", () => {});
    try {
      const client = await pool.connect();
      await client.query("begin");
      // The reset reaches the client while no query of it runs. Only its socket is watched here:
      // a listener on the client would handle the 'error' this test is about, which without the
      // pool's own listener would be uncaught, end the process and fail this file.
      const closed = new Promise((resolve) =>
        (client as unknown as pg.Client).connection.stream.once("close", resolve),
      );
      proxy.cut();
      await closed;
      const error = await client.query("select 1").then(
        () => undefined,
        (caught: unknown) => caught,
      );
      expect(isInfrastructureError(error)).toBe(true);
      client.release(error as Error);
      proxy.restore();
      await waitFor(
        async () => (await pool.query("select 1 as one").catch(() => undefined))?.rows[0]?.one === 1,
        {
          what: "the pool serving again",
        },
      );
    } finally {
      await pool.end();
    }
  });
});
