// Orders and their saga history, plain SQL. Every status change happens under the order row's
// lock and appends a step, so the history is the order of what happened.
import type { EntityManager } from "@ovation/db";
import type { OrderStatus, PaymentMethod } from "@ovation/proto/gen/ovation/order/v1/order_pb.ts";
import type {
  OrderRepository,
  OrderRow,
  PaymentRow,
  StatusChange,
  StepAppend,
  StepRow,
} from "../app/ports.ts";

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

  async orders(em: EntityManager, ids: readonly string[], lock = false): Promise<Map<string, OrderRow>> {
    if (ids.length === 0) return new Map();
    const rows = await em.execute<Row[]>(
      `select * from orders where id in (select jsonb_array_elements_text(?::jsonb)::uuid)
       order by id${lock ? " for update" : ""}`,
      [JSON.stringify(ids)],
    );
    return new Map(rows.map((row) => [row.id as string, orderRow(row)]));
  }

  /** Records payments made, in the transaction that announces them; a redelivery changes nothing. */
  async recordPayments(em: EntityManager, payments: readonly PaymentRow[]): Promise<void> {
    if (payments.length === 0) return;
    await em.execute(
      `insert into payments (order_id, reference, card_payment)
       select p.order_id, p.reference, decode(p.card_payment, 'base64')
       from jsonb_to_recordset(?::jsonb) as p(order_id uuid, reference text, card_payment text)
       on conflict (order_id) do nothing`,
      [
        JSON.stringify(
          payments.map((payment) => ({
            order_id: payment.orderId,
            reference: payment.reference,
            card_payment:
              payment.cardPayment === null ? null : Buffer.from(payment.cardPayment).toString("base64"),
          })),
        ),
      ],
    );
  }

  async payment(em: EntityManager, orderId: string): Promise<PaymentRow | null> {
    return (await this.payments(em, [orderId])).get(orderId) ?? null;
  }

  async payments(em: EntityManager, orderIds: readonly string[]): Promise<Map<string, PaymentRow>> {
    if (orderIds.length === 0) return new Map();
    const rows = await em.execute<Row[]>(
      "select * from payments where order_id in (select jsonb_array_elements_text(?::jsonb)::uuid)",
      [JSON.stringify(orderIds)],
    );
    return new Map(
      rows.map((row) => [
        row.order_id as string,
        {
          orderId: row.order_id as string,
          reference: row.reference as string,
          cardPayment: row.card_payment === null ? null : new Uint8Array(row.card_payment as Buffer),
        },
      ]),
    );
  }

  async setStatuses(em: EntityManager, changes: readonly StatusChange[]): Promise<void> {
    if (changes.length === 0) return;
    await em.execute(
      `update orders o set status = c.status, failure_reason = c.failure_reason, updated_at = c.at
       from jsonb_to_recordset(?::jsonb) as c(order_id uuid, status smallint, failure_reason text, at timestamptz)
       where o.id = c.order_id`,
      [
        JSON.stringify(
          changes.map((c) => ({
            order_id: c.orderId,
            status: c.status,
            failure_reason: c.failureReason,
            at: c.at.toISOString(),
          })),
        ),
      ],
    );
  }

  async addSteps(em: EntityManager, steps: readonly StepAppend[]): Promise<void> {
    if (steps.length === 0) return;
    await em.execute(
      `insert into order_steps (order_id, seq, step, detail, at)
       select s.order_id,
              coalesce((select max(h.seq) from order_steps h where h.order_id = s.order_id), 0)
                + row_number() over (partition by s.order_id order by s.n),
              s.step, s.detail, s.at
       from jsonb_to_recordset(?::jsonb) as s(n int, order_id uuid, step text, detail text, at timestamptz)`,
      [
        JSON.stringify(
          steps.map((step, n) => ({
            n,
            order_id: step.orderId,
            step: step.step,
            detail: step.detail,
            at: step.at.toISOString(),
          })),
        ),
      ],
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
