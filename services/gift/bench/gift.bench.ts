// `pnpm bench gift`: 64 concurrent senders, one hot host. Reports sends per second, send
// latency, time from send to host credit, and the host-credit consumer's throughput draining
// a backlog, beside pgbench's single-row update rate for one hot account in the same run.
// Batching must make host crediting beat that single-row rate by at least 5x. The live phase
// also reports what one send costs each process in CPU and statements, metered until the
// host-credit consumer has caught up (so the credit a send causes is in its cost).
//
// Options: --seconds N (per phase, default 10), --senders N (default 64).
import { resolve } from "node:path";
import { parseArgs } from "node:util";
import { EventBus } from "@ovation/events";
import { testEnvironment } from "@ovation/testkit";
import {
  type Cost,
  closedLoop,
  costTable,
  formatMs,
  formatRate,
  type LoadResult,
  meteredClosedLoop,
  percentile,
  pgbench,
  setUpGiftScene,
  startServiceProcess,
  systemSources,
} from "@ovation/testkit/bench";
import pg from "pg";

const { values } = parseArgs({
  options: { seconds: { type: "string", default: "10" }, senders: { type: "string", default: "64" } },
});
const seconds = Number(values.seconds);
const senders = Number(values.senders);
const walletMain = resolve(import.meta.dirname, "../../wallet/src/main.ts");
const giftMain = resolve(import.meta.dirname, "../src/main.ts");

await using env = await testEnvironment();
const quiet = { ...env.env, LOG_LEVEL: process.env.BENCH_LOG_LEVEL ?? "warn" };
let wallet = await startServiceProcess(walletMain, quiet);
const gift = await startServiceProcess(giftMain, { ...quiet, WALLET_URL: wallet.url });
const db = new pg.Client({ connectionString: env.databaseUrl });
const bus = await EventBus.connect({
  url: env.natsUrl,
  prefix: env.prefix,
  name: "gift-bench",
  ...env.natsOps,
});
await db.connect();
try {
  const { send } = await setUpGiftScene(env, gift.url, senders);

  // Phase 1: live load; the host-credit consumer keeps up.
  let liveLatency: number[] = [];
  const { load: live, cost: liveCost } = await meteredClosedLoop(
    systemSources({ gift, wallet }, env.natsPid),
    senders,
    seconds * 1000,
    (worker) => send(worker),
    {
      settle: async () => {
        liveLatency = await creditLatencies();
      },
    },
  );

  // Phase 2: a backlog built while no replica credits, then drained by one.
  await wallet.stop();
  wallet = await startServiceProcess(walletMain, { ...quiet, RUN_CONSUMERS: "false" }, wallet.port);
  await closedLoop(senders, 2 * seconds * 1000, (worker) => send(worker), 0);
  const backlog = await recordBacklog();
  await wallet.stop();
  wallet = await startServiceProcess(walletMain, quiet, wallet.port);
  const drainRate = await drainRatesOf();

  // Baseline: one hot row updated by as many clients, on the same database.
  await db.query("create table public.hot_account (id int primary key, balance bigint not null)");
  await db.query("insert into public.hot_account values (1, 0)");
  const singleRow = await pgbench(
    env.databaseUrl,
    "UPDATE public.hot_account SET balance = balance + 1 WHERE id = 1;\n",
    senders,
    seconds,
  );

  report(live, liveLatency, backlog, drainRate, singleRow, liveCost);
} finally {
  await db.end();
  await bus.close();
  await gift.stop();
  await wallet.stop();
}

/** Send-to-credit time of every gift credited so far: the send's claim vs the credit's inbox row. */
async function creditLatencies(): Promise<number[]> {
  while ((await pendingCredits()) > 0) await new Promise((r) => setTimeout(r, 50));
  const { rows } = await db.query<{ ms: number }>(`
    select extract(epoch from (i.processed_at - s.created_at)) * 1000 as ms
    from gift.sends s join wallet.inbox i on i.event_id = s.id and i.consumer = 'wallet-host-credit'`);
  return rows.map((row) => Number(row.ms));
}

/** The gifts sent but not credited yet, remembered so their crediting can be timed. */
async function recordBacklog(): Promise<number> {
  const { rowCount } = await db.query(`
    create table public.bench_backlog as
    select s.id from gift.sends s
    where exists (select 1 from wallet.transfers t where t.carried_event_id = s.id)
      and not exists (select 1 from wallet.inbox i where i.consumer = 'wallet-host-credit' and i.event_id = s.id)`);
  return rowCount ?? 0;
}

interface DrainRates {
  /** The whole drain, from the first batch of a freshly started (cold) wallet to the last. */
  whole: number;
  /** From the second batch on: the steady rate once the process is warm. */
  warm: number;
}

/** Credits per second while one freshly started wallet drains the backlog. */
async function drainRatesOf(): Promise<DrainRates> {
  while ((await pendingCredits()) > 0) await new Promise((r) => setTimeout(r, 50));
  const { rows } = await db.query<{ at: Date; credits: number }>(`
    select i.processed_at as at, count(*)::int as credits
    from wallet.inbox i join public.bench_backlog b on b.id = i.event_id
    where i.consumer = 'wallet-host-credit' group by 1 order by 1`);
  // processed_at is each batch's transaction start, so a span from the first batch to the
  // last misses the last batch's own time: count one average batch more.
  const rate = (batches: typeof rows) => {
    if (batches.length < 2) return Number.NaN;
    const seconds = (batches.at(-1)!.at.getTime() - batches[0]!.at.getTime()) / 1000;
    const credits = batches.reduce((sum, batch) => sum + batch.credits, 0);
    return credits / (seconds * (1 + 1 / (batches.length - 1)));
  };
  return { whole: rate(rows), warm: rate(rows.slice(1)) };
}

/**
 * GiftSent events the host-credit consumer has not finished with, as JetStream counts them: a
 * question for NATS, so waiting for the drain costs the database nothing while it is timed.
 */
async function pendingCredits(): Promise<number> {
  const info = await bus.jsm.consumers.info(bus.names.stream("GIFT"), "wallet-host-credit");
  return info.num_pending + info.num_ack_pending;
}

function report(
  live: LoadResult,
  latencies: number[],
  backlog: number,
  drainRate: DrainRates,
  singleRow: number,
  liveCost: Cost,
) {
  console.log(`\ngift sends, ${senders} senders → one host, ${seconds} s per phase\n`);
  console.log("| measure | value |");
  console.log("|---|---|");
  console.log(`| sends/s | ${formatRate(live.perSecond)} (failed ${live.failed}) |`);
  console.log(`| send latency p50 / p99 ms | ${formatMs(live.p50Ms)} / ${formatMs(live.p99Ms)} |`);
  console.log(
    `| send → host credit p50 / p99 ms | ${formatMs(percentile(latencies, 0.5))} / ${formatMs(percentile(latencies, 0.99))} |`,
  );
  console.log(
    `| host credits/s draining a backlog of ${backlog} gifts: whole drain (cold start) / warm (from batch 2) | ${formatRate(drainRate.whole)} / ${formatRate(drainRate.warm)} |`,
  );
  console.log(
    `| pgbench single-row updates/s (one hot account, ${senders} clients) | ${formatRate(singleRow)} |`,
  );
  const ratio = (rate: number) => `${(rate / singleRow).toFixed(1)}x`;
  console.log(
    `| ratio host credits / single-row: whole / warm | ${ratio(drainRate.whole)} / ${ratio(drainRate.warm)} (target ≥ 5x) |`,
  );
  console.log("\ncost per send in the live phase (warm-up included, metered until every credit landed)\n");
  console.log(costTable([liveCost], "send"));
}
