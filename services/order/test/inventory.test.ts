// The inventory module's reserve and release of one order run in different consumers'
// transactions. A release that overtakes a reserve still in flight (the inventory deadline
// failed the order while its OrderCreated was being handled) must still leave no unit reserved:
// reproduced here by holding the stock row's lock, so the reserve stops half-way, and running
// the release meanwhile.
import { type Database, openDatabase } from "@ovation/db";
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
        inventory.reserve(em, orderId, [{ productId: "gem", quantity: 2n }]),
      );
      await waitFor(async () => (await lockWaiters()) >= 1, {
        what: "the reserve to wait for the stock row",
      });
      let released = false;
      const releasing = inTransaction((em) => inventory.release(em, orderId)).then(() => {
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
