// The inventory module's reserve and release of one order run in different consumers'
// transactions. A release that overtakes a reserve still in flight (the inventory deadline
// failed the order while its OrderCreated was being handled) must still leave no unit reserved:
// reproduced here by holding the stock row's lock, so the reserve stops half-way, and running
// the release meanwhile. A consumer batch is one round trip, orders in turn, each all or nothing.
import { countDatabaseStatements, type Database, databaseStatements, openDatabase } from "@ovation/db";
import { type TestEnvironment, testEnvironment, waitFor } from "@ovation/testkit";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Inventory } from "../src/app/inventory.ts";
import { orderSchema } from "../src/main.ts";
import { InventoryStore, ReservationStore } from "../src/store/inventory-store.ts";
import { orderMigrations } from "../src/store/migrations.ts";

let env: TestEnvironment;
let orm: Database;
let inventory: Inventory;
const stockStore = new InventoryStore();

beforeAll(async () => {
  env = await testEnvironment();
  orm = await openDatabase({
    url: env.databaseUrl,
    schema: orderSchema,
    entities: [],
    migrations: orderMigrations,
  });
  inventory = new Inventory(() => orm.em.fork(), stockStore, new ReservationStore());
});
afterAll(async () => {
  await orm?.close();
  await env?.[Symbol.asyncDispose]();
});

/** Sessions of this database waiting for a lock (row or advisory). */
async function lockWaiters(): Promise<number> {
  const [row] = await orm.em
    .fork()
    .execute<{ n: string }[]>(
      "select count(*)::text as n from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock'",
    );
  return Number(row!.n);
}

const inTransaction = <T>(work: (em: ReturnType<Database["em"]["fork"]>) => Promise<T>) =>
  orm.em.fork().transactional(work);

describe("reserve and release of one order", () => {
  it("leaves nothing reserved when the release overtakes a reserve in flight", async () => {
    await inventory.adjust({ productId: "gem", delta: 5n, key: "stock-gem", by: "ops" });
    const orderId = crypto.randomUUID();
    const holder = new pg.Client({ connectionString: env.databaseUrl });
    await holder.connect();
    try {
      await holder.query("begin");
      await holder.query(
        `select * from "${orderSchema}".inventory_stock where product_id = 'gem' for update`,
      );
      const reserving = inTransaction((em) =>
        inventory.reserve(em, [{ orderId, lines: [{ productId: "gem", quantity: 2n }] }]),
      );
      await waitFor(async () => (await lockWaiters()) >= 1, {
        what: "the reserve to wait for the stock row",
      });
      let released = false;
      const releasing = inTransaction((em) => inventory.release(em, [orderId])).then(() => {
        released = true;
      });
      // Either the release went through while the reserve was stopped (the race), or it waits
      // for the reserve: both are allowed to happen, and the outcome must be the same.
      await waitFor(async () => released || (await lockWaiters()) >= 2, {
        what: "the release to finish or to wait for the reserve",
      });
      await holder.query("commit");
      await Promise.all([reserving, releasing]);
    } finally {
      await holder.end();
    }
    const stock = await stockStore.stock(orm.em.fork(), "gem");
    expect(stock).toEqual({ productId: "gem", available: 5n, reserved: 0n, sold: 0n });
  });
});

describe("a consumer batch", () => {
  const statementsSoFar = async () => (await databaseStatements.get()).values[0]?.value ?? 0;

  it("reserves its orders in turn, each all or nothing, in one statement", async () => {
    await inventory.adjust({ productId: "ruby", delta: 5n, key: "stock-ruby", by: "ops" });
    await inventory.adjust({ productId: "opal", delta: 1n, key: "stock-opal", by: "ops" });
    const [first, second, short, both, closed] = Array.from({ length: 5 }, () => crypto.randomUUID());
    await inTransaction((em) => inventory.release(em, [closed!]));
    const ruby = (quantity: bigint) => ({ productId: "ruby", quantity });
    countDatabaseStatements();
    const before = await statementsSoFar();
    const outcomes = await inTransaction((em) =>
      inventory.reserve(em, [
        { orderId: first!, lines: [ruby(2n)] },
        { orderId: second!, lines: [ruby(2n)] },
        // Short of ruby after the first two: neither line is reserved.
        { orderId: short!, lines: [{ productId: "opal", quantity: 1n }, ruby(2n)] },
        { orderId: both!, lines: [{ productId: "opal", quantity: 1n }, ruby(1n)] },
        { orderId: first!, lines: [ruby(2n)] },
        { orderId: closed!, lines: [ruby(1n)] },
      ]),
    );
    expect((await statementsSoFar()) - before, "begin, the function, commit").toBe(3);
    expect(outcomes).toEqual([
      { reserved: true },
      { reserved: true },
      { reserved: false, reason: "only 1 of ruby left" },
      { reserved: true },
      { reserved: true },
      { reserved: false, reason: "the order was closed before its stock was reserved" },
    ]);
    const em = orm.em.fork();
    expect(await stockStore.stock(em, "ruby")).toEqual({
      productId: "ruby",
      available: 0n,
      reserved: 5n,
      sold: 0n,
    });
    expect(await stockStore.stock(em, "opal")).toEqual({
      productId: "opal",
      available: 0n,
      reserved: 1n,
      sold: 0n,
    });

    await inTransaction((em) => inventory.commit(em, [first!, both!, first!]));
    await inTransaction((em) => inventory.release(em, [second!, short!, both!]));
    expect(await stockStore.stock(em, "ruby")).toEqual({
      productId: "ruby",
      available: 2n,
      reserved: 0n,
      sold: 3n,
    });
    expect(await stockStore.stock(em, "opal")).toEqual({
      productId: "opal",
      available: 0n,
      reserved: 0n,
      sold: 1n,
    });
    // Every order is closed: a late reservation of any of them takes nothing.
    const late = await inTransaction((em) => inventory.reserve(em, [{ orderId: short!, lines: [ruby(1n)] }]));
    expect(late).toEqual([{ reserved: false, reason: "the order was closed before its stock was reserved" }]);
  });

  it("never deadlocks with concurrent batches over the same orders and products", async () => {
    await inventory.adjust({ productId: "jade", delta: 1_000n, key: "stock-jade", by: "ops" });
    await inventory.adjust({ productId: "onyx", delta: 1_000n, key: "stock-onyx", by: "ops" });
    const orders = Array.from({ length: 40 }, () => crypto.randomUUID());
    const lines = [
      { productId: "onyx", quantity: 1n },
      { productId: "jade", quantity: 2n },
    ];
    // Batches over overlapping orders, in different orders, reserving and finishing at once.
    const shuffled = (ids: string[]) => [...ids].sort(() => Math.random() - 0.5);
    await Promise.all([
      ...Array.from({ length: 4 }, () =>
        inTransaction((em) =>
          inventory.reserve(
            em,
            shuffled(orders).map((orderId) => ({ orderId, lines })),
          ),
        ),
      ),
      inTransaction((em) => inventory.commit(em, shuffled(orders.slice(0, 20)))),
      inTransaction((em) => inventory.release(em, shuffled(orders.slice(20)))),
    ]);
    await inTransaction((em) => inventory.commit(em, orders.slice(0, 20)));
    await inTransaction((em) => inventory.release(em, orders.slice(20)));
    const em = orm.em.fork();
    const jade = await stockStore.stock(em, "jade");
    const onyx = await stockStore.stock(em, "onyx");
    // Nothing is left reserved, and what was sold was reserved once per order at most.
    expect(jade?.reserved).toBe(0n);
    expect(onyx?.reserved).toBe(0n);
    expect(jade!.available + jade!.sold).toBe(1_000n);
    expect(onyx!.available + onyx!.sold).toBe(1_000n);
    expect(jade!.sold).toBe(2n * onyx!.sold);
    expect(onyx!.sold).toBeLessThanOrEqual(20n);
  });
});
