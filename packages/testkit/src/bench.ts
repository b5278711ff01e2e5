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
import { percentile } from "./stats.ts";

export * from "./cost.ts";
export { type GiftScene, setUpGiftScene } from "./gift-scene.ts";
export { freePort, type ServiceProcess, startServiceProcess } from "./processes.ts";
export { type SeedOptions, type SqlRunner, seedFundedUsers } from "./seed.ts";
export { type Stack, type StackOptions, startStack } from "./stack.ts";
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

/** Runs pgbench with a custom script; returns transactions per second (excluding connection time). */
export async function pgbench(
  databaseUrl: string,
  script: string,
  clients: number,
  seconds: number,
): Promise<number> {
  const file = join(tmpdir(), `ovation-bench-${process.pid}-${Date.now()}.sql`);
  writeFileSync(file, script);
  const url = new URL(databaseUrl);
  const { stdout } = await run("pgbench", [
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
  ]);
  const match = /tps = ([\d.]+) \(without initial connection time\)/.exec(stdout);
  if (match === null) throw new Error(`unexpected pgbench output:\n${stdout}`);
  return Number(match[1]);
}

export const formatRate = (value: number) => Math.round(value).toLocaleString("en-US");
export const formatMs = (value: number) => value.toFixed(2);
