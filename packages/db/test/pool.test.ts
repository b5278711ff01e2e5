// Regression: a transaction whose connection dies mid-way must give its pooled connection back.
// With kysely 0.29.6 (what MikroORM 7.2.1 pins) a failed ROLLBACK skipped the release, so every
// transaction caught by a database outage leaked a pooled connection, and after an outage as
// long as the pool was wide the service never answered again. The root package.json overrides
// kysely to 0.29.9, which releases in a finally.
import { FaultProxy, testEnvironment } from "@ovation/testkit";
import { describe, expect, it } from "vitest";
import { nativePool, openDatabase } from "../src/index.ts";

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
});
