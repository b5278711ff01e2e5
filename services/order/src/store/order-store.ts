// Orders and their saga history, plain SQL. Every status change happens under the order row's
// lock and appends a step, so the history is the order of what happened.
import type { EntityManager } from "@ovation/db";
import type { OrderStatus, PaymentMethod } from "@ovation/proto/gen/ovation/order/v1/order_pb.ts";
import type { OrderRepository, OrderRow, PaymentRow, StepRow } from "../app/ports.ts";

type Row = Record<string, unknown>;

function orderRow(row: Row): OrderRow {
  const lines = row.lines as {
    product_id: string;
    name: string;
    quantity: number;
    unit_price: string;
    limited: boolean;
    coins: string;
  }[];
  return {
    id: row.id as string,
    userId: row.user_id as string,
    status: Number(row.status) as OrderStatus,
    paymentMethod: Number(row.payment_method) as PaymentMethod,
    lines: lines.map((l) => ({
      productId: l.product_id,
      name: l.name,
      quantity: l.quantity,
      unitPrice: BigInt(l.unit_price),
      limited: l.limited,
      coins: BigInt(l.coins),
    })),
    asset: row.asset as string,
    total: BigInt(row.total as string),
    coins: BigInt(row.coins as string),
    failureReason: row.failure_reason as string,
    holdId: (row.hold_id as string | null) ?? null,
    requestHash: row.request_hash as Buffer,
    createdAt: new Date(row.created_at as string),
    updatedAt: new Date(row.updated_at as string),
  };
}

export class OrderStore implements OrderRepository {
  async byKey(em: EntityManager, userId: string, key: string): Promise<OrderRow | null> {
    const rows = await em.execute<Row[]>("select * from orders where user_id = ? and idempotency_key = ?", [
      userId,
      key,
    ]);
    return rows[0] === undefined ? null : orderRow(rows[0]);
  }

  async order(em: EntityManager, id: string, lock = false): Promise<OrderRow | null> {
    const rows = await em.execute<Row[]>(`select * from orders where id = ?${lock ? " for update" : ""}`, [
      id,
    ]);
    return rows[0] === undefined ? null : orderRow(rows[0]);
  }

  async insert(em: EntityManager, order: OrderRow & { idempotencyKey: string }): Promise<void> {
    await em.execute(
      `insert into orders (id, user_id, status, payment_method, lines, asset, total, coins, idempotency_key,
         request_hash, created_at, updated_at, hold_id)
       values (?, ?, ?, ?, ?::jsonb, ?, ?, ?, ?, ?, ?, ?, ?)`,
      [
        order.id,
        order.userId,
        order.status,
        order.paymentMethod,
        JSON.stringify(
          order.lines.map((l) => ({
            product_id: l.productId,
            name: l.name,
            quantity: l.quantity,
            unit_price: l.unitPrice.toString(),
            limited: l.limited,
            coins: l.coins.toString(),
          })),
        ),
        order.asset,
        order.total.toString(),
        order.coins.toString(),
        order.idempotencyKey,
        order.requestHash,
        order.createdAt,
        order.updatedAt,
        order.holdId,
      ],
    );
  }

  /** Records payments made, in the transaction that announces them; a redelivery changes nothing. */
  async recordPayments(em: EntityManager, payments: readonly PaymentRow[]): Promise<void> {
    for (const payment of payments)
      await em.execute(
        "insert into payments (order_id, reference, card_payment) values (?, ?, ?) on conflict (order_id) do nothing",
        [
          payment.orderId,
          payment.reference,
          payment.cardPayment === null ? null : Buffer.from(payment.cardPayment),
        ],
      );
  }

  async payment(em: EntityManager, orderId: string): Promise<PaymentRow | null> {
    const rows = await em.execute<Row[]>("select * from payments where order_id = ?", [orderId]);
    const row = rows[0];
    if (row === undefined) return null;
    return {
      orderId: row.order_id as string,
      reference: row.reference as string,
      cardPayment: row.card_payment === null ? null : new Uint8Array(row.card_payment as Buffer),
    };
  }

  async setStatus(
    em: EntityManager,
    id: string,
    status: OrderStatus,
    at: Date,
    failureReason = "",
  ): Promise<void> {
    await em.execute("update orders set status = ?, failure_reason = ?, updated_at = ? where id = ?", [
      status,
      failureReason,
      at,
      id,
    ]);
  }

  async addStep(em: EntityManager, orderId: string, step: string, detail: string, at: Date): Promise<void> {
    await em.execute(
      `insert into order_steps (order_id, seq, step, detail, at)
       select ?, coalesce(max(seq), 0) + 1, ?, ?, ? from order_steps where order_id = ?`,
      [orderId, step, detail, at, orderId],
    );
  }

  async history(em: EntityManager, orderId: string): Promise<StepRow[]> {
    const rows = await em.execute<Row[]>("select * from order_steps where order_id = ? order by seq", [
      orderId,
    ]);
    return rows.map((row) => ({
      seq: Number(row.seq),
      step: row.step as string,
      detail: row.detail as string,
      at: new Date(row.at as string),
    }));
  }

  async forUser(
    em: EntityManager,
    userId: string,
    limit: number,
    before: { at: Date; id: string } | undefined,
  ): Promise<OrderRow[]> {
    const rows = await em.execute<Row[]>(
      `select * from orders where user_id = ?
         and (?::timestamptz is null or (created_at, id) < (?::timestamptz, ?::uuid))
       order by created_at desc, id desc limit ?`,
      [userId, before?.at ?? null, before?.at ?? null, before?.id ?? null, limit],
    );
    return rows.map(orderRow);
  }
}
