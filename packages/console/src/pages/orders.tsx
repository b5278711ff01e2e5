// Orders and their sagas. Without an id: the signed-in person's orders (an operator opens any
// order by id; the API lists only one's own). With one: the saga as a timeline from the order's
// history, read again every second until the order is COMPLETED or FAILED, and at once when the
// buyer's `user` channel says its status changed.
import { ok, type Schema } from "@ovation/client";
import { coins, enumLabel, shortId, timeLabel } from "../format.ts";
import { useChannel, usePoll } from "../live.ts";
import { href } from "../router.ts";
import { useSession } from "../session.ts";
import { OpenById, remember } from "./open-by-id.tsx";

type Order = Schema<"ovation.order.v1.Order">;

const listRefreshMs = 3_000;
const orderRefreshMs = 1_000;
const finished = new Set(["ORDER_STATUS_COMPLETED", "ORDER_STATUS_FAILED"]);

export function OrdersPage({ orderId }: { orderId: string | undefined }) {
  return orderId === undefined ? <OrderList /> : <OrderView orderId={orderId} />;
}

function OrderList() {
  const { client } = useSession();
  const orders = usePoll(
    () => ok(client.api.GET("/api/orders", { params: { query: { pageSize: 20 } } })),
    listRefreshMs,
    [client],
  );
  return (
    <OpenById page="orders" title="Orders" what="order" hint="Any order, for an admin; your own otherwise.">
      <h2>My orders</h2>
      {orders.error === undefined ? null : <p class="error">{orders.error}</p>}
      {orders.value?.orders?.length === 0 ? <p class="hint">You have placed no order.</p> : null}
      <table data-testid="orders">
        <tbody>
          {(orders.value?.orders ?? []).map((order) => (
            <tr key={order.id}>
              <td>
                <a href={href("orders", order.id)}>{shortId(order.id)}</a>
              </td>
              <td>{enumLabel(order.status, "ORDER_STATUS")}</td>
              <td>{coins(order.total?.amount, order.total?.asset)}</td>
              <td>{timeLabel(order.createTime)}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </OpenById>
  );
}

function OrderView({ orderId }: { orderId: string }) {
  const { client, session } = useSession();
  const order = usePoll(
    async () => {
      const loaded = (await ok(client.api.GET("/api/orders/{orderId}", { params: { path: { orderId } } })))
        .order;
      remember("orders", orderId, `${shortId(orderId)} (${enumLabel(loaded?.status, "ORDER_STATUS")})`);
      return loaded;
    },
    0,
    [client, orderId],
  );
  const done = finished.has(order.value?.status ?? "");
  // Polling stops once the saga has finished; the buyer's channel hurries it along before.
  usePoll(async () => (done ? undefined : order.reload()), done ? 0 : orderRefreshMs, [done]);
  useChannel(client, session?.userId === order.value?.userId ? "user" : undefined, (message) => {
    if (message.type === "order.status" && message.data.id === orderId) order.reload();
  });
  const shown: Order | undefined = order.value;
  if (shown === undefined)
    return (
      <section>{order.error === undefined ? <p>Loading…</p> : <p class="error">{order.error}</p>}</section>
    );
  return (
    <section>
      <h1>Order {shortId(orderId)}</h1>
      <p class="hint">
        <code>{orderId}</code> · buyer {shown.userId} · {enumLabel(shown.paymentMethod, "PAYMENT_METHOD")} ·{" "}
        {coins(shown.total?.amount, shown.total?.asset)}
      </p>
      <p class={`status ${done ? "done" : ""}`} data-testid="order-status">
        {enumLabel(shown.status, "ORDER_STATUS")}
        {shown.failureReason ? `: ${shown.failureReason}` : ""}
      </p>
      <ul class="lines">
        {(shown.lines ?? []).map((line) => (
          <li key={line.productId}>
            {line.quantity} × {line.name || line.productId}
          </li>
        ))}
      </ul>
      <h2>Saga</h2>
      <ol class="timeline" data-testid="timeline">
        {(shown.history ?? []).map((step) => (
          <li key={step.seq}>
            <span class="time">{timeLabel(step.time)}</span> <strong>{step.step}</strong>
            {step.detail ? <span class="detail"> {step.detail}</span> : null}
          </li>
        ))}
      </ol>
    </section>
  );
}
