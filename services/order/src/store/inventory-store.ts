// The inventory module's persistence: stock on hand, reserved for orders in flight, and sold.
// Only the inventory module (app/inventory.ts) uses it, through its ports.
import type { EntityManager } from "@ovation/db";
import type {
  ReservationEnd,
  ReservationOutcome,
  ReservationRepository,
  ReservationRequest,
  StockRepository,
  StockRow,
} from "../app/ports.ts";

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

/** Reservations, a consumer batch at a time (sql/inventory_reserve.sql, inventory_finish.sql). */
export class ReservationStore implements ReservationRepository {
  async reserve(em: EntityManager, orders: readonly ReservationRequest[]): Promise<ReservationOutcome[]> {
    const rows = await em.execute<Row[]>("select reserved, reason from inventory_reserve(?::jsonb)", [
      JSON.stringify(
        orders.map((order) => ({
          order_id: order.orderId,
          lines: order.lines.map((line) => ({
            product_id: line.productId,
            quantity: line.quantity.toString(),
          })),
        })),
      ),
    ]);
    return rows.map((row) =>
      row.reserved === true ? { reserved: true } : { reserved: false, reason: row.reason as string },
    );
  }

  async finish(em: EntityManager, orderIds: readonly string[], state: ReservationEnd): Promise<void> {
    await em.execute("select inventory_finish(?::jsonb, ?::smallint)", [JSON.stringify(orderIds), state]);
  }
}
