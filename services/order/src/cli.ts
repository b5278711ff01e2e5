// Operator commands on the configured database (DATABASE_URL), run through the wrapper:
//   ./ov saga show ORDER_ID    an order, its lines and every step of its saga with its time;
//                              exits 1 when there is no such order, or no order schema at
//                              DATABASE_URL (said in one line: packages/operator)
import { infrastructureConfigSchema, loadConfig } from "@ovation/config";
import { openDatabase } from "@ovation/db";
import { missingTable } from "@ovation/operator";
import { OrderStatusSchema, PaymentMethodSchema } from "@ovation/proto/gen/ovation/order/v1/order_pb.ts";
import { orderSchema } from "./main.ts";
import { orderMigrations } from "./store/migrations.ts";
import { OrderStore } from "./store/order-store.ts";

const usage = "usage: ./ov saga show ORDER_ID";
const nameOf = (values: readonly { number: number; name: string }[], value: number) =>
  values.find((v) => v.number === value)?.name ?? String(value);
const uuidPattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export async function sagaShow(
  databaseUrl: string,
  orderId: string,
): Promise<{ code: number; text: string }> {
  if (!uuidPattern.test(orderId)) return { code: 2, text: `not an order id: ${orderId}` };
  const problem = await missingTable(databaseUrl, orderSchema, "orders");
  if (problem !== undefined) return { code: 1, text: problem };
  const orm = await openDatabase({
    url: databaseUrl,
    schema: orderSchema,
    entities: [],
    migrations: orderMigrations,
    migrate: false,
  });
  try {
    const store = new OrderStore();
    const em = orm.em.fork();
    const order = await store.order(em, orderId);
    if (order === null) return { code: 1, text: `no order ${orderId}` };
    const lines = [
      `order ${order.id}  ${nameOf(OrderStatusSchema.values, order.status)}${order.failureReason === "" ? "" : ` (${order.failureReason})`}`,
      `buyer ${order.userId}  paid ${nameOf(PaymentMethodSchema.values, order.paymentMethod)}  total ${order.total} ${order.asset}`,
      ...order.lines.map((l) => `  ${l.quantity} × ${l.productId} at ${l.unitPrice}`),
      "saga:",
      ...(await store.history(em, orderId)).map(
        (s) =>
          `  ${String(s.seq).padStart(3)}  ${s.at.toISOString()}  ${s.step}${s.detail === "" ? "" : `  ${s.detail}`}`,
      ),
    ];
    return { code: 0, text: lines.join("\n") };
  } finally {
    await orm.close();
  }
}

if (import.meta.main) {
  const [command, subcommand, orderId] = process.argv.slice(2);
  if (command !== "saga" || subcommand !== "show" || orderId === undefined) {
    console.error(usage);
    process.exit(2);
  }
  const config = loadConfig(infrastructureConfigSchema, process.env);
  const { code, text } = await sagaShow(config.DATABASE_URL, orderId);
  (code === 0 ? console.log : console.error)(text);
  process.exit(code);
}
