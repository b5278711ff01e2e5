// Benchmark helpers: services run as child processes (so the load generator does not share
// their event loop), closed-loop load with latency percentiles, and pgbench baselines measured
// in the same run on the same database; funded users (seed.ts) and the gift scene
// (gift-scene.ts) the benchmarks of several services start from.
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";

export { type GiftScene, setUpGiftScene } from "./gift-scene.ts";
export { type SeedOptions, type SqlRunner, seedFundedUsers } from "./seed.ts";

const run = promisify(execFile);
const serviceStartTimeoutMs = 60_000;

export async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

export interface ServiceProcess {
  url: string;
  port: number;
  child: ChildProcess;
  /** SIGTERM drains; SIGKILL is a crash. */
  stop(signal?: NodeJS.Signals): Promise<void>;
  /** `await using service = await startServiceProcess(…)` stops it however the scope ends. */
  [Symbol.asyncDispose](): Promise<void>;
}

async function stopProcess(child: ChildProcess, signal: NodeJS.Signals): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once("exit", resolve));
  child.kill(signal);
  await exited;
}

/** Starts `node <entry>` with `env` and waits until its port accepts connections. */
export async function startServiceProcess(
  entry: string,
  env: Record<string, string>,
  requestedPort?: number,
): Promise<ServiceProcess> {
  const port = requestedPort ?? (await freePort());
  // BENCH_PROFILE_DIR=dir: every service process writes a V8 CPU profile there when it exits.
  const profileDir = process.env.BENCH_PROFILE_DIR;
  const profiling = profileDir ? { NODE_OPTIONS: `--cpu-prof --cpu-prof-dir=${profileDir}` } : {};
  const child = spawn(process.execPath, [entry], {
    env: { ...process.env, ...env, ...profiling, PORT: String(port) },
    stdio: ["ignore", "inherit", "inherit"],
  });
  const deadline = Date.now() + serviceStartTimeoutMs;
  while (!(await accepts(port))) {
    if (child.exitCode !== null) throw new Error(`${entry} exited with ${child.exitCode}`);
    if (Date.now() > deadline) throw new Error(`${entry} did not listen within ${serviceStartTimeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    child,
    stop: (signal: NodeJS.Signals = "SIGTERM") => stopProcess(child, signal),
    [Symbol.asyncDispose]: () => stopProcess(child, "SIGTERM"),
  };
}

function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, "127.0.0.1");
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}

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

export function percentile(values: number[], fraction: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(fraction * sorted.length))]!;
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
