// The inventory module's persistence: stock on hand, reserved for orders in flight, and sold.
// Only the inventory module (app/inventory.ts) uses it, through its ports.
import type { EntityManager } from "@ovation/db";
import type { ReservationRepository, ReservationRow, StockRepository, StockRow } from "../app/ports.ts";

type Row = Record<string, unknown>;

const stockRow = (row: Row): StockRow => ({
  productId: row.product_id as string,
  available: BigInt(row.available as string),
  reserved: BigInt(row.reserved as string),
  sold: BigInt(row.sold as string),
});

export class InventoryStore implements StockRepository {
  async available(em: EntityManager, productIds: readonly string[]): Promise<Map<string, bigint>> {
    if (productIds.length === 0) return new Map();
    const rows = await em.execute<Row[]>(
      `select product_id, available from inventory_stock
       where product_id in (select jsonb_array_elements_text(?::jsonb))`,
      [JSON.stringify(productIds)],
    );
    return new Map(rows.map((row) => [row.product_id as string, BigInt(row.available as string)]));
  }

  /** The product's stock row, created empty if missing, locked until the transaction ends. */
  async lockStock(em: EntityManager, productId: string): Promise<StockRow> {
    const rows = await em.execute<Row[]>("select * from inventory_stock where product_id = ? for update", [
      productId,
    ]);
    if (rows[0] !== undefined) return stockRow(rows[0]);
    await em.execute(
      "insert into inventory_stock (product_id, available) values (?, 0) on conflict do nothing",
      [productId],
    );
    return this.lockStock(em, productId);
  }

  /** Records an adjustment by its key; false when the key was used before. */
  async recordAdjustment(
    em: EntityManager,
    adjustment: { productId: string; key: string; delta: bigint; by: string; at: Date },
  ): Promise<boolean> {
    const rows = await em.execute<Row[]>(
      `insert into inventory_adjustments (product_id, idempotency_key, delta, adjusted_by, adjusted_at)
       values (?, ?, ?, ?, ?) on conflict do nothing returning product_id`,
      [adjustment.productId, adjustment.key, adjustment.delta.toString(), adjustment.by, adjustment.at],
    );
    return rows.length === 1;
  }

  async addAvailable(em: EntityManager, productId: string, delta: bigint): Promise<StockRow> {
    const rows = await em.execute<Row[]>(
      "update inventory_stock set available = available + ?::bigint where product_id = ? returning *",
      [delta.toString(), productId],
    );
    return stockRow(rows[0]!);
  }

  async stock(em: EntityManager, productId: string): Promise<StockRow | null> {
    const rows = await em.execute<Row[]>("select * from inventory_stock where product_id = ?", [productId]);
    return rows[0] === undefined ? null : stockRow(rows[0]);
  }
}

/** Reservations of one order, by state. */
export class ReservationStore implements ReservationRepository {
  async forOrder(em: EntityManager, orderId: string, state?: number): Promise<ReservationRow[]> {
    const rows = await em.execute<Row[]>(
      `select product_id, quantity from inventory_reservations
       where order_id = ? and (?::smallint is null or state = ?::smallint) order by product_id`,
      [orderId, state ?? null, state ?? null],
    );
    return rows.map((row) => ({
      productId: row.product_id as string,
      quantity: BigInt(row.quantity as string),
    }));
  }

  /** Reserves one line: the units move from available to reserved and the reservation is kept. */
  async reserveLine(em: EntityManager, orderId: string, line: ReservationRow): Promise<void> {
    await em.execute(
      `with moved as (
         update inventory_stock set available = available - ?::bigint, reserved = reserved + ?::bigint
         where product_id = ? returning product_id)
       insert into inventory_reservations (order_id, product_id, quantity, state)
       select ?, product_id, ?::bigint, 1 from moved`,
      [line.quantity.toString(), line.quantity.toString(), line.productId, orderId, line.quantity.toString()],
    );
  }

  async setState(em: EntityManager, orderId: string, state: number): Promise<void> {
    await em.execute("update inventory_reservations set state = ? where order_id = ? and state = 1", [
      state,
      orderId,
    ]);
  }

  /** Whether the order was closed, and whether it holds reservations: one round trip. */
  async orderState(em: EntityManager, orderId: string): Promise<{ closed: boolean; reserved: boolean }> {
    const [row] = await em.execute<Row[]>(
      `select exists (select 1 from inventory_closed_orders where order_id = ?) as closed,
              exists (select 1 from inventory_reservations where order_id = ?) as reserved`,
      [orderId, orderId],
    );
    return { closed: row!.closed as boolean, reserved: row!.reserved as boolean };
  }

  async close(em: EntityManager, orderId: string, outcome: number): Promise<void> {
    await em.execute(
      "insert into inventory_closed_orders (order_id, outcome, closed_at) values (?, ?, ?) on conflict do nothing",
      [orderId, outcome, new Date()],
    );
  }

  /** Moves units between the stock's columns (reserve: available → reserved, and so on). */
  async move(
    em: EntityManager,
    productId: string,
    quantity: bigint,
    move: "release" | "commit",
  ): Promise<void> {
    const set = {
      release: "available = available + ?::bigint, reserved = reserved - ?::bigint",
      commit: "sold = sold + ?::bigint, reserved = reserved - ?::bigint",
    }[move];
    await em.execute(`update inventory_stock set ${set} where product_id = ?`, [
      quantity.toString(),
      quantity.toString(),
      productId,
    ]);
  }
}
