// The readiness probe (databaseProbe) answers from memory: a database that stops answering is
// reported unreachable by the next probe once the answer has aged, not by every caller's own
// round trip; a connection reset forgets the answer at once; and a database back is reported
// reachable again.
import { FaultProxy, testEnvironment, waitFor } from "@ovation/testkit";
import { describe, expect, it } from "vitest";
import { databaseProbe, nativePool, openDatabase } from "../src/index.ts";

describe("the database's readiness probe", () => {
  it("answers from memory, ages its answer, forgets it on a reset and sees the database back", async () => {
    await using env = await testEnvironment();
    await using proxy = await FaultProxy.start(env.databaseUrl);
    const orm = await openDatabase({
      url: proxy.url(env.databaseUrl),
      schema: "probe_test",
      entities: [],
      migrations: [],
      poolMax: 2,
    });
    try {
      const pool = await nativePool(orm);
      const reachable = await databaseProbe(orm);
      expect(await reachable()).toBe(true);

      // Replies lost: no error reaches the pool, so the answer stands until it ages, and then
      // a probe that runs into its timeout turns it.
      proxy.loseReplies();
      expect(await reachable()).toBe(true);
      await waitFor(async () => !(await reachable()), {
        timeoutMs: 10_000,
        what: "the probe to see the loss",
      });
      proxy.restore();
      await waitFor(reachable, { timeoutMs: 10_000, what: "the database back" });

      // A reset of an idle connection forgets the answer: the very next call asks the database.
      expect(await reachable()).toBe(true);
      const idle = pool.idleCount;
      expect(idle).toBeGreaterThan(0);
      proxy.cut();
      await waitFor(() => pool.idleCount < idle, {
        timeoutMs: 10_000,
        what: "the pool to drop its reset connection",
      });
      expect(await reachable()).toBe(false);
    } finally {
      proxy.restore();
      await orm.close();
    }
  });
});
