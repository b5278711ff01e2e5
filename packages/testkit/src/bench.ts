// Benchmark helpers: services run as child processes (so the load generator does not share
// their event loop), alone or as the whole `./ov up` stack (stack.ts), closed-loop load with
// latency percentiles, what each operation cost every process (cost.ts), and pgbench baselines
// measured in the same run on the same database; funded users (seed.ts) and the gift scene
// (gift-scene.ts) the benchmarks of several services start from.
import { execFile } from "node:child_process";
import { writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { type Cost, type CostSource, meter } from "./cost.ts";
import { percentile } from "./stats.ts";

export { type Balancer, startBalancer } from "./balancer.ts";
export * from "./cost.ts";
export { type GiftScene, setUpGiftScene } from "./gift-scene.ts";
export { type HttpReply, type HttpRequestOptions, httpRequest, postJson } from "./http-client.ts";
export { freePort, type ServiceProcess, startServiceProcess } from "./processes.ts";
export { type SeedOptions, type SqlRunner, seedFundedUsers } from "./seed.ts";
export {
  type GiftGateway,
  type Stack,
  type StackOptions,
  startGiftGateway,
  startStack,
  unthrottledGateway,
} from "./stack.ts";
export { percentile } from "./stats.ts";

const run = promisify(execFile);

export interface LoadResult {
  concurrency: number;
  seconds: number;
  completed: number;
  failed: number;
  perSecond: number;
  p50Ms: number;
  p99Ms: number;
}

/**
 * Runs `call` from `concurrency` closed-loop workers for `durationMs` after a warm-up, and
 * reports throughput and latency. Bounded by time, so it always stops.
 */
export async function closedLoop(
  concurrency: number,
  durationMs: number,
  call: (worker: number, iteration: number) => Promise<unknown>,
  warmupMs = 1_000,
): Promise<LoadResult> {
  const latencies: number[] = [];
  let failed = 0;
  let measuring = false;
  const start = performance.now();
  const warmupEnd = start + warmupMs;
  const end = warmupEnd + durationMs;
  const worker = async (index: number) => {
    for (let iteration = 0; performance.now() < end; iteration++) {
      const begun = performance.now();
      measuring = begun >= warmupEnd;
      try {
        await call(index, iteration);
        if (measuring) latencies.push(performance.now() - begun);
      } catch {
        if (measuring) failed++;
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, (_, i) => worker(i)));
  const seconds = durationMs / 1000;
  return {
    concurrency,
    seconds,
    completed: latencies.length,
    failed,
    perSecond: latencies.length / seconds,
    p50Ms: percentile(latencies, 0.5),
    p99Ms: percentile(latencies, 0.99),
  };
}

/**
 * A closed loop (as `closedLoop`) metered from its first call until `settle` resolves (the work
 * the calls caused downstream, such as credits or a battle's result): its load, and what each
 * completed call cost every source (the warm-up's calls included, as their work is).
 */
export async function meteredClosedLoop(
  sources: readonly CostSource[],
  concurrency: number,
  durationMs: number,
  call: (worker: number, iteration: number) => Promise<unknown>,
  options: { warmupMs?: number; settle?: () => Promise<unknown> } = {},
): Promise<{ load: LoadResult; cost: Cost }> {
  let load: LoadResult | undefined;
  const cost = await meter(sources, async () => {
    let calls = 0;
    load = await closedLoop(
      concurrency,
      durationMs,
      async (worker, iteration) => {
        await call(worker, iteration);
        calls++;
      },
      options.warmupMs,
    );
    await options.settle?.();
    return calls;
  });
  if (load === undefined) throw new Error("the load loop did not run");
  return { load, cost };
}

export interface OpenLoopResult extends LoadResult {
  /** When the measured part began (after the warm-up). */
  measuredFrom: Date;
  /** Calls not started because `inFlightMax` were still waiting: the system fell behind. */
  skipped: number;
}

/**
 * Starts call number n at `n / perSecond` s after the start, for a warm-up and then
 * `durationMs`, whatever the earlier calls are doing (open loop): a system slower than the
 * rate shows it as growing latency, not as a lower rate. At most `inFlightMax` calls wait at
 * once; a call due beyond that is skipped and counted. Latency is measured from when a call
 * was due, so a late timer counts against the system, not for it.
 */
export async function openLoop(
  perSecond: number,
  durationMs: number,
  call: (n: number) => Promise<unknown>,
  { warmupMs = 1_000, inFlightMax = 10_000 } = {},
): Promise<OpenLoopResult> {
  const latencies: number[] = [];
  const calls: Promise<void>[] = [];
  let failed = 0;
  let skipped = 0;
  let inFlight = 0;
  const start = performance.now();
  const warmupEnd = start + warmupMs;
  const end = warmupEnd + durationMs;
  const measuredFrom = new Date(Date.now() + warmupMs);
  const intervalMs = 1_000 / perSecond;
  for (let n = 0; ; n++) {
    const due = start + n * intervalMs;
    if (due >= end) break;
    const wait = due - performance.now();
    if (wait > 1) await new Promise((resolve) => setTimeout(resolve, wait));
    const measuring = due >= warmupEnd;
    if (inFlight >= inFlightMax) {
      if (measuring) skipped++;
      continue;
    }
    inFlight++;
    calls.push(
      call(n).then(
        () => {
          inFlight--;
          if (measuring) latencies.push(performance.now() - due);
        },
        () => {
          inFlight--;
          if (measuring) failed++;
        },
      ),
    );
  }
  await Promise.all(calls);
  const seconds = durationMs / 1000;
  return {
    concurrency: inFlightMax,
    seconds,
    completed: latencies.length,
    failed,
    skipped,
    measuredFrom,
    perSecond: latencies.length / seconds,
    p50Ms: percentile(latencies, 0.5),
    p99Ms: percentile(latencies, 0.99),
  };
}

/**
 * Runs pgbench with a custom script; returns transactions per second (excluding connection
 * time). `searchPath` sets the sessions' search_path (PGOPTIONS), for a peer kept in its own
 * schema.
 */
export async function pgbench(
  databaseUrl: string,
  script: string,
  clients: number,
  seconds: number,
  searchPath?: string,
): Promise<number> {
  const file = join(tmpdir(), `ovation-bench-${process.pid}-${Date.now()}.sql`);
  writeFileSync(file, script);
  const url = new URL(databaseUrl);
  const { stdout } = await run(
    "pgbench",
    [
      "-n",
      "-h",
      url.hostname,
      "-p",
      url.port || "5432",
      "-U",
      decodeURIComponent(url.username || "postgres"),
      "-c",
      String(clients),
      "-j",
      String(Math.min(clients, 2)),
      "-T",
      String(seconds),
      "-f",
      file,
      url.pathname.slice(1),
    ],
    searchPath === undefined ? {} : { env: { ...process.env, PGOPTIONS: `-c search_path=${searchPath}` } },
  );
  const match = /tps = ([\d.]+) \(without initial connection time\)/.exec(stdout);
  if (match === null) throw new Error(`unexpected pgbench output:\n${stdout}`);
  return Number(match[1]);
}

export const formatRate = (value: number) => Math.round(value).toLocaleString("en-US");
export const formatMs = (value: number) => value.toFixed(2);
