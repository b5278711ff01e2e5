// lockIdempotencyKey against a real PostgreSQL: a second transaction on the same (scope, key)
// waits until the first ends, while other keys and other scopes pass at once. Regression: the
// first version joined scope and key with a NUL, which PostgreSQL text cannot hold, so every
// call failed with 08P01 "invalid message format" (answered as "database unavailable").
import { testEnvironment, waitFor } from "@ovation/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Database, type EntityManager, lockIdempotencyKey, openDatabase } from "../src/index.ts";

let env: Awaited<ReturnType<typeof testEnvironment>>;
let orm: Database;

beforeAll(async () => {
  env = await testEnvironment();
  orm = await openDatabase({ url: env.databaseUrl, schema: "keys_test", entities: [], migrations: [] });
});
afterAll(async () => {
  await orm?.close();
  await env?.[Symbol.asyncDispose]();
});

/** Runs a transaction that takes the lock and stays open until `release` is called. */
function holdLock(scope: string, key: string) {
  let release!: () => void;
  const released = new Promise<void>((resolve) => {
    release = resolve;
  });
  let taken!: () => void;
  const lockTaken = new Promise<void>((resolve) => {
    taken = resolve;
  });
  const done = orm.em.fork().transactional(async (em: EntityManager) => {
    await lockIdempotencyKey(em, scope, key);
    taken();
    await released;
  });
  return { lockTaken, release, done };
}

const lockAndCommit = (scope: string, key: string) =>
  orm.em.fork().transactional(async (em: EntityManager) => {
    await lockIdempotencyKey(em, scope, key);
    return "locked";
  });

/** Backends of this database waiting for an advisory lock right now. */
async function advisoryWaiters(): Promise<number> {
  const rows = await orm.em
    .fork()
    .execute<{ waiting: string }[]>(
      "select count(*) as waiting from pg_locks where locktype = 'advisory' and not granted and database = (select oid from pg_database where datname = current_database())",
    );
  return Number(rows[0]!.waiting);
}

describe("lockIdempotencyKey", () => {
  it("makes a repeat of a key in flight wait for the first transaction, and nothing else", async () => {
    const first = holdLock("order:alice", "key-1");
    // A transaction that fails before it holds the lock fails the test now, not at its timeout.
    await Promise.race([first.lockTaken, first.done]);

    // Another key, the same key of another caller, and a pair that only a careless separator
    // would confuse with ("order:alice", "key-1") all pass while the first is open.
    await expect(lockAndCommit("order:alice", "key-2")).resolves.toBe("locked");
    await expect(lockAndCommit("order:bob", "key-1")).resolves.toBe("locked");
    await expect(lockAndCommit("order:alice:key", "-1")).resolves.toBe("locked");

    const repeat = lockAndCommit("order:alice", "key-1");
    let repeatEnded = false;
    void repeat.finally(() => {
      repeatEnded = true;
    });
    await waitFor(async () => (await advisoryWaiters()) === 1, { what: "the repeat waiting for the lock" });
    // The repeat is blocked on the lock, not finished: it can only finish once the first ends.
    expect(repeatEnded).toBe(false);
    first.release();
    await first.done;
    await expect(repeat).resolves.toBe("locked");
  });
});
