// `pnpm bench idle`: what the stack costs when nobody uses it. Starts every service as `./ov up`
// does (each its own process, each knowing every other's URL) on a fresh database and
// nats-server, lets them settle, then measures CPU over --seconds from /proc: utime + stime of
// every service process, of the nats-server, and of Postgres — the backends of this run's
// database, Postgres's own background processes, and the postmaster's cutime + cstime (backends
// that exited meanwhile; on a shared server this includes other users' exited backends, so it is
// reported apart). Reported as % of one core per process and in total (0035: the target is ≤ 1 %).
//
// Options: --seconds N (default 30), --settle N (seconds after the last start, default 10).
//
// The CPU meter is small and local: the shared per-process meter of packages/testkit/src/bench.ts
// should take it over.
import { readdirSync, readFileSync } from "node:fs";
import { resolve } from "node:path";
import { parseArgs } from "node:util";
import { testEnvironment } from "@ovation/testkit";
import { freePort, type ServiceProcess, startServiceProcess } from "@ovation/testkit/bench";

const { values } = parseArgs({
  options: { seconds: { type: "string", default: "30" }, settle: { type: "string", default: "10" } },
});
const seconds = Number(values.seconds);
const settleSeconds = Number(values.settle);
const entry = (name: string) => resolve(import.meta.dirname, `../../${name}/src/main.ts`);
/** Clock ticks per second of /proc/<pid>/stat (USER_HZ: 100 on Linux). */
const ticksPerSecond = 100;

interface CpuTimes {
  /** utime + stime, in ticks. */
  own: number;
  /** cutime + cstime: children that exited and were waited for, in ticks. */
  children: number;
}

/** CPU times of a process, or undefined when it is gone. */
function cpuTimes(pid: number): CpuTimes | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // Fields after the command (which may hold spaces), from field 3 (state) on.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const [utime, stime, cutime, cstime] = fields.slice(11, 15).map(Number) as [
      number,
      number,
      number,
      number,
    ];
    return { own: utime + stime, children: cutime + cstime };
  } catch {
    return undefined;
  }
}

function commandLine(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").replaceAll("\0", " ").trim();
  } catch {
    return "";
  }
}

function processes(): { pid: number; command: string }[] {
  return readdirSync("/proc")
    .filter((name) => /^\d+$/.test(name))
    .map((name) => ({ pid: Number(name), command: commandLine(Number(name)) }));
}

await using env = await testEnvironment();
const database = new URL(env.databaseUrl).pathname.slice(1);
const order = ["wallet", "card", "gift", "pk", "discount", "order", "gateway"] as const;
const ports = Object.fromEntries(await Promise.all(order.map(async (name) => [name, await freePort()])));
const urls = {
  WALLET_URL: `http://127.0.0.1:${ports.wallet}`,
  CARD_URL: `http://127.0.0.1:${ports.card}`,
  GIFT_URL: `http://127.0.0.1:${ports.gift}`,
  PK_URL: `http://127.0.0.1:${ports.pk}`,
  DISCOUNT_URL: `http://127.0.0.1:${ports.discount}`,
  ORDER_URL: `http://127.0.0.1:${ports.order}`,
  GATEWAY_URL: `http://127.0.0.1:${ports.gateway}`,
};
const settings = { ...env.env, ...urls, LOG_LEVEL: process.env.BENCH_LOG_LEVEL ?? "warn" };
const started: { name: string; service: ServiceProcess }[] = [];
try {
  for (const name of order)
    started.push({ name, service: await startServiceProcess(entry(name), settings, ports[name]) });
  await new Promise((resolve) => setTimeout(resolve, settleSeconds * 1_000));

  const measured = new Map<string, number>();
  const postmaster = processes().find(
    (p) => /postgres -D|postmaster/.test(p.command) && !p.command.includes(":"),
  );
  const nats = processes().find((p) => p.command.startsWith("nats-server") && p.command.includes(env.prefix));
  const ours = (command: string) => command.startsWith("postgres:") && command.includes(` ${database} `);
  const background = (command: string) =>
    command.startsWith("postgres:") && !/ \S+ \S+ (\[local\]|\d+\.\d+\.\d+\.\d+\(\d+\))/.test(command);
  const tracked = () => [
    ...started.map(({ name, service }) => ({ label: name, pid: service.child.pid! })),
    ...(nats === undefined ? [] : [{ label: "nats-server", pid: nats.pid }]),
    ...processes()
      .filter((p) => ours(p.command))
      .map((p) => ({ label: "postgres (this database's backends)", pid: p.pid })),
    ...processes()
      .filter((p) => background(p.command))
      .map((p) => ({ label: "postgres (background processes)", pid: p.pid })),
  ];
  const before = new Map(tracked().map((p) => [p.pid, { ...p, times: cpuTimes(p.pid) }]));
  const postmasterBefore = postmaster === undefined ? undefined : cpuTimes(postmaster.pid);
  const backendsBefore = processes().filter((p) => ours(p.command)).length;
  const begun = performance.now();
  await new Promise((resolve) => setTimeout(resolve, seconds * 1_000));
  const elapsedSeconds = (performance.now() - begun) / 1_000;
  // Processes that appeared meanwhile count from zero; those that exited are lost (see cutime).
  for (const p of tracked())
    if (!before.has(p.pid)) before.set(p.pid, { ...p, times: { own: 0, children: 0 } });
  for (const { label, pid, times } of before.values()) {
    const now = cpuTimes(pid);
    if (now === undefined || times === undefined) continue;
    measured.set(label, (measured.get(label) ?? 0) + (now.own - times.own));
  }
  const postmasterAfter = postmaster === undefined ? undefined : cpuTimes(postmaster.pid);
  const exitedTicks =
    postmasterBefore === undefined || postmasterAfter === undefined
      ? Number.NaN
      : postmasterAfter.own - postmasterBefore.own + postmasterAfter.children - postmasterBefore.children;
  const backendsAfter = processes().filter((p) => ours(p.command)).length;

  const percent = (ticks: number) => ((ticks / ticksPerSecond / elapsedSeconds) * 100).toFixed(2);
  const total = [...measured.values()].reduce((sum, ticks) => sum + ticks, 0);
  console.log(
    `\nidle stack: ${order.length} services, ${seconds} s after ${settleSeconds} s to settle (% of one core)\n`,
  );
  console.log("| process | CPU % of a core |");
  console.log("|---|---|");
  for (const [label, ticks] of measured) console.log(`| ${label} | ${percent(ticks)} |`);
  console.log(`| **total** | **${percent(total)}** |`);
  console.log(`| postmaster + exited backends (shared server: other users' too) | ${percent(exitedTicks)} |`);
  console.log(`\nthis database's backends: ${backendsBefore} at the start, ${backendsAfter} at the end`);
} finally {
  for (const { service } of started.reverse()) await service.stop();
}
