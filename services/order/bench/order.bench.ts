// `pnpm bench order`: orders per second and the time from CreateOrder to a final state.
// Orders (one item, 70 % by card with 10 % declines, 30 % from coins) are placed for --seconds
// either by closed-loop clients (each waits for its answer before the next order) or, with
// --rate, open loop: one order every 1/rate s whatever the answers, so "at 100 orders/s" is
// measured as stated and a saga slower than the rate shows as growing waits, not as fewer
// orders. The saga runs behind them. Reported: orders placed per second, orders finished per
// second (the saga's throughput), p50 / p99 of the time from an order's creation to its final
// state (its last status change, from the database), and p50 / p99 of the wait before each
// step of the saga's history (order_steps): where the time goes.
//
// Options: --seconds N (default 10), --clients N (default 32: closed-loop clients, or the
// buyers the open loop takes turns with), --rate N (orders/s, open loop; default closed loop).
import { resolve } from "node:path";
import { parseArgs } from "node:util";
import { bearerInterceptor } from "@ovation/auth";
import { OrderService, PaymentMethod, ProductKind } from "@ovation/proto/gen/ovation/order/v1/order_pb.ts";
import { createServiceClient } from "@ovation/server";
import { testEnvironment, waitFor } from "@ovation/testkit";
import {
  closedLoop,
  costTable,
  formatMs,
  formatRate,
  meter,
  openLoop,
  percentile,
  seedFundedUsers,
  startServiceProcess,
  systemSources,
} from "@ovation/testkit/bench";
import pg from "pg";

const { values } = parseArgs({
  options: {
    seconds: { type: "string", default: "10" },
    clients: { type: "string", default: "32" },
    rate: { type: "string" },
  },
});
const seconds = Number(values.seconds);
const clients = Number(values.clients);
const rate = values.rate === undefined ? undefined : Number(values.rate);
const service = (name: string) => resolve(import.meta.dirname, `../../${name}/src/main.ts`);

await using env = await testEnvironment();
const quiet = { ...env.env, LOG_LEVEL: process.env.BENCH_LOG_LEVEL ?? "warn", DATABASE_POOL_MAX: "20" };
await using wallet = await startServiceProcess(service("wallet"), quiet);
await using card = await startServiceProcess(service("card"), {
  ...quiet,
  CARD_FAILURE_RATE: "0.1",
  CARD_LATENCY_MS: "20",
});
await using order = await startServiceProcess(service("order"), {
  ...quiet,
  WALLET_URL: wallet.url,
  CARD_URL: card.url,
});

const adminToken = await env.token("bench-admin", ["admin"]);
// Clients of the protocol the gateway calls the service in (Connect over HTTP/2, decision 0047).
const admin = createServiceClient(OrderService, {
  baseUrl: order.url,
  interceptors: [bearerInterceptor(() => adminToken)],
});
await admin.createProduct({
  product: {
    id: "bench-item",
    name: "Bench item",
    kind: ProductKind.ITEM,
    priceCoins: 1n,
    priceToman: 100n,
    coins: 0n,
    active: true,
  },
});
await admin.adjustStock({ productId: "bench-item", delta: 1_000_000n, idempotencyKey: "bench" });
const db = new pg.Client({ connectionString: env.databaseUrl });
db.on("error", () => {});
await db.connect();
await seedFundedUsers(db, "b", clients, 1_000_000_000n);
const tokens = await Promise.all(Array.from({ length: clients }, (_, i) => env.token(`b${i + 1}`, ["user"])));
const client = createServiceClient(OrderService, { baseUrl: order.url });

const placeOrder = (worker: number, iteration: number) =>
  client.createOrder(
    {
      items: [{ productId: "bench-item", quantity: 1 }],
      paymentMethod: iteration % 10 < 7 ? PaymentMethod.CARD : PaymentMethod.WALLET,
      idempotencyKey: `${worker}-${iteration}`,
    },
    { headers: { authorization: `Bearer ${tokens[worker]}` } },
  );
const started = new Date();
const sources = systemSources({ order, wallet, card }, env.natsPid);
let load!: Awaited<ReturnType<typeof closedLoop>> | Awaited<ReturnType<typeof openLoop>>;
// Metered from the first order until every order has ended: the saga's work is in the cost.
const cost = await meter(sources, async () => {
  load =
    rate === undefined
      ? await closedLoop(clients, seconds * 1_000, placeOrder)
      : await openLoop(rate, seconds * 1_000, (n) => placeOrder(n % clients, Math.floor(n / clients)));
  await waitFor(
    async () =>
      (await db.query<{ n: number }>('select count(*)::int as n from "order".orders where status in (1, 2)'))
        .rows[0]!.n === 0,
    { timeoutMs: 120_000, intervalMs: 100, what: "every order to end" },
  );
  return (await db.query<{ n: number }>('select count(*)::int as n from "order".orders')).rows[0]!.n;
});
// The open loop's warm-up orders run through the saga too, but only the measured ones count.
const measuredFrom = "measuredFrom" in load ? load.measuredFrom : started;
const { rows } = await db.query<{ ms: number; status: number; created_at: Date; updated_at: Date }>(
  `select extract(epoch from (updated_at - created_at)) * 1000 as ms, status, created_at, updated_at
   from "order".orders where created_at >= $1`,
  [measuredFrom],
);
// Where the time goes: the wait before each saga step, from the step before it in the history.
const { rows: stages } = await db.query<{ step: string; p50: number; p99: number; n: number }>(
  `select s.step, count(*)::int as n,
     percentile_cont(0.5) within group (order by extract(epoch from (s.at - p.at)) * 1000) as p50,
     percentile_cont(0.99) within group (order by extract(epoch from (s.at - p.at)) * 1000) as p99
   from "order".order_steps s join "order".order_steps p on p.order_id = s.order_id and p.seq = s.seq - 1
   join "order".orders o on o.id = s.order_id
   where o.created_at >= $1
   group by s.step order by 3`,
  [measuredFrom],
);
await db.end();
const times = rows.map((r) => Number(r.ms));
const first = Math.min(...rows.map((r) => r.created_at.getTime()));
const last = Math.max(...rows.map((r) => r.updated_at.getTime()));
const byStatus = Map.groupBy(rows, (r) => (r.status === 3 ? "COMPLETED" : "FAILED"));

const loadShape =
  rate === undefined ? `${clients} closed-loop clients` : `open loop at ${rate}/s (${clients} buyers)`;
console.log(`\norders, ${loadShape}, ${seconds} s (70 % card with 10 % declines, 30 % coins)\n`);
console.log("| measure | value |");
console.log("|---|---|");
console.log(
  `| orders placed/s | ${formatRate(load.perSecond)} (failed ${load.failed}${"skipped" in load ? `, skipped ${load.skipped}` : ""}), CreateOrder p50 / p99 ${formatMs(load.p50Ms)} / ${formatMs(load.p99Ms)} ms |`,
);
console.log(
  `| orders finished/s (first created → last finished) | ${formatRate(rows.length / ((last - first) / 1000))} |`,
);
console.log(`| outcomes | ${[...byStatus].map(([s, list]) => `${s}: ${list.length}`).join(", ")} |`);
console.log(
  `| create → final p50 / p99 ms | ${formatMs(percentile(times, 0.5))} / ${formatMs(percentile(times, 0.99))} |`,
);
for (const stage of stages)
  console.log(
    `| wait before ${stage.step} p50 / p99 ms (${stage.n}) | ${formatMs(Number(stage.p50))} / ${formatMs(Number(stage.p99))} |`,
  );
console.log("\ncost per order (every order placed, warm-up included, metered until every order ended)\n");
console.log(costTable([cost], "order"));
