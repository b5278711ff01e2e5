// `pnpm bench discount`, two parts, each beside pgbench running the bare conditional UPDATE of
// one counter row (`update … set redeemed = redeemed + 1 where redeemed < N`, the hot-row
// ceiling a one-row-per-redemption design cannot pass) at 64 clients, in the same run:
//
// 1. Claim throughput: 64 closed-loop clients calling the service as the gateway does, a
//    distinct user per redemption, one campaign with 50,000 slots: redemptions/s (target ≥ 3×
//    the hot row). Its cost is metered until every redemption's credit has come back.
// 2. The flash: 10,000 distinct users POST /api/discount/redeem through the gateway at once for
//    1,000 slots: time until the campaign is exhausted, p50/p99 of all 10,000 responses, and
//    time from exhaustion until the last of the 1,000 credits lands in the wallet (targets:
//    every response within 5 s, the last credit within 5 s of exhaustion).
//
// Options: --seconds N (part 1, default 10), --clients N (default 64), --crowd N (default 10000).
import { resolve } from "node:path";
import { parseArgs } from "node:util";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { bearerInterceptor } from "@ovation/auth";
import { CampaignKind, DiscountService } from "@ovation/proto/gen/ovation/discount/v1/discount_pb.ts";
import { createServiceClient } from "@ovation/server";
import { testEnvironment, waitFor } from "@ovation/testkit";
import {
  closedLoop,
  costTable,
  formatMs,
  formatRate,
  meter,
  percentile,
  pgbench,
  postJson,
  startServiceProcess,
  systemSources,
} from "@ovation/testkit/bench";
import pg from "pg";

const { values } = parseArgs({
  options: {
    seconds: { type: "string", default: "10" },
    clients: { type: "string", default: "64" },
    crowd: { type: "string", default: "10000" },
  },
});
const seconds = Number(values.seconds);
const clients = Number(values.clients);
const crowd = Number(values.crowd);
const flashSlots = 1_000;
const throughputSlots = 50_000;
const service = (name: string) => resolve(import.meta.dirname, `../../${name}/src/main.ts`);

await using env = await testEnvironment();
const quiet = { ...env.env, LOG_LEVEL: process.env.BENCH_LOG_LEVEL ?? "warn", DATABASE_POOL_MAX: "20" };
await using wallet = await startServiceProcess(service("wallet"), quiet);
await using discount = await startServiceProcess(service("discount"), {
  ...quiet,
  WALLET_URL: wallet.url,
  // The benchmark measures claims, not the per-user throttle.
  DISCOUNT_USER_REDEEMS_PER_MINUTE: "100000",
});
await using gateway = await startServiceProcess(service("gateway"), {
  ...quiet,
  WALLET_URL: wallet.url,
  DISCOUNT_URL: discount.url,
  // One load generator on one address stands for 10,000 phones.
  RATE_LIMIT_IP_WRITES: "1000000",
  RATE_LIMIT_USER_WRITES: "1000000",
  UPSTREAM_INFLIGHT_MAX: "512",
  UPSTREAM_QUEUE_MAX: "20000",
  UPSTREAM_QUEUE_WAIT_MS: "10000",
});

const adminToken = await env.token("bench-admin", ["admin"]);
// Clients of the protocol the gateway calls the service in (Connect over HTTP/2, decision 0047).
const admin = createServiceClient(DiscountService, {
  baseUrl: discount.url,
  interceptors: [bearerInterceptor(() => adminToken)],
});
const campaign = (code: string, slots: number) =>
  admin.createCampaign({
    name: code,
    kind: CampaignKind.SHARED_CODE,
    code,
    money: { asset: "TOMAN", amount: 1_000_000n },
    redemptionLimit: BigInt(slots),
    endTime: timestampFromDate(new Date(Date.now() + 3_600_000)),
    activate: true,
    idempotencyKey: code,
  });
const tokens = (prefix: string, count: number) =>
  Promise.all(Array.from({ length: count }, (_, i) => env.token(`${prefix}${i}`, ["user"])));

// The hot-row ceiling, on its own table in the same database.
const db = new pg.Client({ connectionString: env.databaseUrl });
// Disposing the environment drops the database, ending this session if a failure skipped db.end().
db.on("error", () => {});
await db.connect();
await db.query("create table bench_counter (id int primary key, redeemed bigint not null)");
await db.query("insert into bench_counter values (1, 0)");
const hotRow = await pgbench(
  env.databaseUrl,
  `update bench_counter set redeemed = redeemed + 1 where id = 1 and redeemed < ${throughputSlots * 1000};\n`,
  clients,
  seconds,
);

// The batched claim at the database alone: pgbench calling claim_redemptions with batches of
// 64 distinct users on one campaign (what the service's group commit sends), at 8 clients.
// 1,000,000 slots, the most one campaign's budget may fund (the wallet's budgetCreditsMax),
// and ~5× what 10 s of this load claims.
const sqlCampaign = (await campaign("SQLCEILING", 1_000_000)).campaign!;
const claimBatch = 64;
const claimTps = await pgbench(
  env.databaseUrl,
  `select count(*) from discount.claim_redemptions('${sqlCampaign.id}',
     (select jsonb_agg(jsonb_build_object('id', gen_random_uuid(), 'user_id', gen_random_uuid()::text))
      from generate_series(1, ${claimBatch})), now());\n`,
  8,
  seconds,
);

// Part 1: claim throughput.
const throughputCampaign = (await campaign("THROUGHPUT", throughputSlots)).campaign!;
const users = await tokens("t", throughputSlots);
const client = createServiceClient(DiscountService, { baseUrl: discount.url });
let next = 0;
// What each process spent, from /proc (the load generator apart); statements from /metrics.
const sources = systemSources({ gateway, discount, wallet }, env.natsPid);
let throughput: Awaited<ReturnType<typeof closedLoop>> | undefined;
const throughputCost = await meter(sources, async () => {
  throughput = await closedLoop(clients, seconds * 1_000, async () => {
    const token = users[next++ % users.length]!;
    await client.redeem({ code: "THROUGHPUT" }, { headers: { authorization: `Bearer ${token}` } });
  });
  // Metered until the last redemption's credit has come back to the discount service (its
  // event, the wallet's credit, the wallet's event): that work is the redemptions' too, and
  // the flash then starts on a machine that is not still crediting them.
  await waitFor(
    async () =>
      (
        await db.query<{ n: number }>(
          "select count(*)::int as n from discount.redemptions where campaign_id = $1 and credited_at is null",
          [throughputCampaign.id],
        )
      ).rows[0]!.n === 0,
    { timeoutMs: 120_000, intervalMs: 50, what: "every throughput redemption credited" },
  );
  return throughput.completed;
});

// Part 2: the flash, through the gateway.
const flashCampaign = (await campaign("FLASH", flashSlots)).campaign!;
const crowdTokens = await tokens("f", crowd);
let started = 0;
let startedAt = 0;
let replies: { status: number; ms: number; doneAt: number }[] = [];
const flash = () =>
  Promise.all(
    crowdTokens.map(async (token) => {
      const begun = performance.now();
      const { status } = await postJson(`${gateway.url}/api/discount/redeem`, token, { code: "FLASH" });
      return { status, ms: performance.now() - begun, doneAt: performance.now() - started };
    }),
  );
const flashCost = await meter(sources, async () => {
  started = performance.now();
  startedAt = Date.now();
  replies = await flash();
  return replies.length;
});
const wins = replies.filter((r) => r.status === 200);
const { rows: redeemedRows } = await db.query<{ n: number }>(
  "select count(*)::int as n from discount.redemptions where campaign_id = $1",
  [flashCampaign.id],
);
const redeemedCount = redeemedRows[0]!.n;
const { rows: exhaustedRows } = await db.query<{ at: Date }>(
  "select max(created_at) as at from discount.redemptions where campaign_id = $1",
  [flashCampaign.id],
);
const exhaustedAt = exhaustedRows[0]!.at;
await waitFor(
  async () =>
    (
      await db.query<{ n: number }>(
        "select count(*)::int as n from wallet.transfers where kind = 7 and metadata->>'campaign' = $1",
        [flashCampaign.id],
      )
    ).rows[0]!.n === redeemedCount,
  { timeoutMs: 60_000, intervalMs: 10, what: "every flash credit" },
);
const { rows: creditRows } = await db.query<{ at: Date }>(
  "select max(created_at) as at from wallet.transfers where kind = 7 and metadata->>'campaign' = $1",
  [flashCampaign.id],
);
await db.end();
const latencies = replies.map((r) => r.ms);
const byStatus = Map.groupBy(replies, (r) => r.status);

console.log(
  `\ndiscount claims, ${clients} clients (Connect over HTTP/2), distinct users, ${throughputSlots} slots, ${seconds} s\n`,
);
console.log("| measure | value |");
console.log("|---|---|");
console.log(
  `| pgbench conditional UPDATE of one counter row (${clients} clients) | ${formatRate(hotRow)}/s |`,
);
console.log(
  `| redemptions/s | ${formatRate(throughput!.perSecond)} (failed ${throughput!.failed}), p50 / p99 ${formatMs(throughput!.p50Ms)} / ${formatMs(throughput!.p99Ms)} ms |`,
);
console.log(`| ratio to the hot row | ${(throughput!.perSecond / hotRow).toFixed(2)}x (target ≥ 3x) |`);
console.log(
  `| claim_redemptions alone, batches of ${claimBatch} (pgbench, 8 clients) | ${formatRate(claimTps * claimBatch)} redemptions/s = ${(
    (claimTps * claimBatch) / hotRow
  ).toFixed(1)}x the hot row |`,
);
console.log(`\ncost per redemption (straight to the discount service, as the gateway calls it)\n`);
console.log(costTable([throughputCost], "redemption"));
console.log(`\nthe flash: ${crowd} users at once through the gateway, ${flashSlots} slots\n`);
console.log("| measure | value |");
console.log("|---|---|");
console.log(
  `| answers by status | ${[...byStatus].map(([status, list]) => `${status}: ${list.length}`).join(", ")} |`,
);
console.log(`| redeemed | ${redeemedCount} of ${flashSlots} (answered 200: ${wins.length}) |`);
console.log(
  `| time until exhausted (last redemption recorded) | ${formatMs(exhaustedAt.getTime() - startedAt)} ms |`,
);
console.log(
  `| all responses p50 / p99 / max ms | ${formatMs(percentile(latencies, 0.5))} / ${formatMs(percentile(latencies, 0.99))} / ${formatMs(Math.max(...latencies))} (target: all ≤ 5000) |`,
);
console.log(
  `| last credit after exhaustion | ${formatMs(creditRows[0]!.at.getTime() - exhaustedAt.getTime())} ms (target ≤ 5000) |`,
);
// Each answer after exhaustion: how long after the last slot went it came back.
const exhaustedAfterStart = exhaustedAt.getTime() - startedAt;
const lateRefusals = replies.filter((r) => r.status === 429).map((r) => r.doneAt - exhaustedAfterStart);
console.log(
  `| "exhausted" answered after exhaustion: p50 / p99 / max ms | ${formatMs(percentile(lateRefusals, 0.5))} / ${formatMs(percentile(lateRefusals, 0.99))} / ${formatMs(Math.max(...lateRefusals))} (target: all ≤ 1000) |`,
);
console.log(`\ncost per flash request (all ${crowd}, through the gateway)\n`);
console.log(costTable([flashCost], "request"));
