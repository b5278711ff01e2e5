// `pnpm bench e2e`: the number users feel. REST gift sends through the gateway at 64 senders
// into one room, with the whole `./ov up` stack running (every service, every consumer: host
// credits, PK scoring, discovery, notifications, the gateway's live feeds). Reported: sends per
// second and latency, and what one send costs every process in CPU and statements, metered from
// the first send until every durable consumer has caught up (so the work a send causes later
// is in its cost).
//
// Each round starts a fresh environment and stack; with --baseline DIR the rounds alternate
// between that checkout's services (built and installed there) and this one's, and the report
// sets them side by side. Targets (issue 20): ≤ 1.5 ms CPU per send across all services,
// Postgres and NATS; ≥ 1,000 sends/s at 64 senders with p99 ≤ 150 ms.
//
// Options: --seconds N (per round, default 10), --rounds N (default 3), --senders N (default 64),
//          --baseline DIR, --pool-max N (DATABASE_POOL_MAX of every service; default each
//          service's connection budget, decision 0043).
import { resolve } from "node:path";
import { parseArgs } from "node:util";
import { connectionBudget } from "@ovation/config";
import { EventBus } from "@ovation/events";
import { testEnvironment } from "@ovation/testkit";
import {
  type Cost,
  closedLoop,
  costTable,
  formatMs,
  formatRate,
  type LoadResult,
  meter,
  percentile,
  postJson,
  setUpGiftScene,
  startStack,
  systemSources,
  unthrottledGateway,
} from "@ovation/testkit/bench";

const { values } = parseArgs({
  options: {
    seconds: { type: "string", default: "10" },
    rounds: { type: "string", default: "3" },
    senders: { type: "string", default: "64" },
    baseline: { type: "string" },
    "pool-max": { type: "string" },
  },
});
const poolMax = values["pool-max"];
const seconds = Number(values.seconds);
const rounds = Number(values.rounds);
const senders = Number(values.senders);
const checkouts = [
  ...(values.baseline === undefined ? [] : [{ name: "baseline", root: resolve(values.baseline) }]),
  { name: "this checkout", root: resolve(import.meta.dirname, "../../..") },
];
const warmupMs = 3_000;
const drainTimeoutMs = 60_000;

interface Round {
  load: LoadResult;
  cost: Cost;
}

const results = new Map<string, Round[]>(checkouts.map((checkout) => [checkout.name, []]));
for (let round = 0; round < rounds; round++) {
  for (const checkout of checkouts) results.get(checkout.name)!.push(await runRound(checkout.root));
}
report();

async function runRound(root: string): Promise<Round> {
  await using env = await testEnvironment();
  await using stack = await startStack(env, {
    root,
    env: { LOG_LEVEL: process.env.BENCH_LOG_LEVEL ?? "warn", ...unthrottledGateway },
    // Not the test kit's small pools of in-process tests: each service's budget, or --pool-max.
    serviceEnv: (service) => ({
      DATABASE_POOL_MAX: poolMax ?? String((connectionBudget as Record<string, number>)[service] ?? 2),
    }),
  });
  const bus = await EventBus.connect({
    url: env.natsUrl,
    prefix: env.prefix,
    name: "e2e-bench",
    ...env.natsOps,
  });
  try {
    const { roomId, senderTokens } = await setUpGiftScene(env, stack.service("gift").url, senders);
    const gateway = stack.service("gateway").url;
    const send = async (worker: number) => {
      const { status } = await postJson(`${gateway}/api/gifts/send`, senderTokens[worker]!, {
        roomId,
        giftId: "rose",
        count: 1,
        idempotencyKey: crypto.randomUUID(),
      });
      if (status !== 200) throw new Error(`HTTP ${status}`);
    };
    // JIT, pools and caches warm; then nothing left over from the warm-up in the metered span.
    await closedLoop(senders, warmupMs, send, 0);
    await drained(bus);
    const sources = systemSources(Object.fromEntries(stack.services), env.natsPid);
    let load: LoadResult | undefined;
    const cost = await meter(sources, async () => {
      load = await closedLoop(senders, seconds * 1000, send, 0);
      await drained(bus);
      return load.completed;
    });
    return { load: load!, cost };
  } finally {
    await bus.close();
  }
}

/** Waits until every durable consumer of every stream has nothing pending or unacknowledged. */
async function drained(bus: EventBus): Promise<void> {
  const deadline = Date.now() + drainTimeoutMs;
  for (;;) {
    let outstanding = 0;
    for await (const stream of bus.jsm.streams.names()) {
      for await (const consumer of bus.jsm.consumers.list(stream)) {
        if (consumer.config.durable_name !== undefined)
          outstanding += consumer.num_pending + consumer.num_ack_pending;
      }
    }
    if (outstanding === 0) return;
    if (Date.now() > deadline)
      throw new Error(`consumers still have ${outstanding} messages after ${drainTimeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

function report() {
  const median = (rounds: Round[], pick: (round: Round) => number) => percentile(rounds.map(pick), 0.5);
  console.log(
    `\nREST gift sends through the gateway, ${senders} senders → one room, the whole stack, ${rounds} rounds of ${seconds} s\n`,
  );
  console.log(
    "| checkout | sends/s per round | median sends/s | median p50 / p99 ms | failed | CPU ms per send |",
  );
  console.log("|---|---|---|---|---|---|");
  const cpuPerSend = (round: Round) =>
    round.cost.parts.filter((part) => !part.apart).reduce((sum, part) => sum + part.cpuMs, 0) /
    round.cost.operations;
  for (const [name, rounds] of results) {
    console.log(
      `| ${name} | ${rounds.map((r) => formatRate(r.load.perSecond)).join(", ")} | ${formatRate(median(rounds, (r) => r.load.perSecond))} | ${formatMs(median(rounds, (r) => r.load.p50Ms))} / ${formatMs(median(rounds, (r) => r.load.p99Ms))} | ${rounds.reduce((sum, r) => sum + r.load.failed, 0)} | ${median(rounds, cpuPerSend).toFixed(3)} |`,
    );
  }
  for (const [name, rounds] of results) {
    console.log(
      `\n${name}: cost per send (medians of ${rounds.length} rounds, metered until consumers caught up)\n`,
    );
    console.log(
      costTable(
        rounds.map((round) => round.cost),
        "send",
      ),
    );
  }
  if (results.size === 2) {
    const [baseline, current] = [...results.values()];
    const ratio = (pick: (round: Round) => number) => median(current!, pick) / median(baseline!, pick);
    console.log(
      `\nthis checkout / baseline: sends/s ${ratio((r) => r.load.perSecond).toFixed(2)}×, CPU per send ${ratio(cpuPerSend).toFixed(2)}×`,
    );
  }
  console.log("\ntargets: ≤ 1.5 ms CPU per send in all; ≥ 1,000 sends/s with p99 ≤ 150 ms");
}
