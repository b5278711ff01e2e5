// What an operation costs, per process: CPU time from /proc/<pid>/stat (user + system, over the
// whole measured span, every thread and every consumer of the process included) and the
// statements each service sent to Postgres (its `ovation_db_statements_total`). Postgres is
// metered as a whole server: every `postgres` process plus what the postmaster collected from
// backends that ended, so a benchmark on a quiet machine sees its backends, the WAL writer and
// the checkpointer; the load generator is metered apart and kept out of the totals.
import { execFileSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { percentile } from "./stats.ts";

export interface CostSource {
  name: string;
  /** CPU milliseconds used so far. */
  cpuMs(): number;
  /** Statements sent to Postgres so far, for the sources that count them. */
  statements?(): Promise<number>;
  /** Not part of the system under test (the load generator): reported, not summed. */
  apart?: boolean;
}

let ticksPerSecond: number | undefined;
function msPerTick(): number {
  ticksPerSecond ??= Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim());
  return 1000 / ticksPerSecond;
}

interface ProcStat {
  comm: string;
  /** utime + stime + cutime + cstime, in clock ticks. */
  ticks: number;
}

function readStat(pid: number | string): ProcStat | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return undefined; // ended meanwhile
  }
  // "pid (comm) state ppid …": comm may hold spaces, so split after its closing parenthesis.
  const close = text.lastIndexOf(")");
  const fields = text.slice(close + 2).split(" ");
  // fields[0] is field 3 (state); utime, stime, cutime, cstime are fields 14–17.
  const ticks = [11, 12, 13, 14].reduce((sum, index) => sum + Number(fields[index]), 0);
  return { comm: text.slice(text.indexOf("(") + 1, close), ticks };
}

/** A process by id; its children's CPU counts once they have ended and been waited for. */
export function processSource(name: string, pid: number): CostSource {
  let last = 0;
  return {
    name,
    cpuMs: () => {
      const stat = readStat(pid);
      if (stat !== undefined) last = stat.ticks * msPerTick();
      return last;
    },
  };
}

/** A service process: its CPU and the statements it reports at /metrics. */
export function serviceSource(name: string, service: { url: string; child: { pid?: number } }): CostSource {
  const cpu = processSource(name, service.child.pid!);
  return {
    ...cpu,
    async statements() {
      const response = await fetch(`${service.url}/metrics`);
      const match = /^ovation_db_statements_total (\d+)/m.exec(await response.text());
      return match === null ? Number.NaN : Number(match[1]);
    },
  };
}

/** Every postgres process of the machine, and the CPU of ended backends (the postmaster's cutime). */
export function postgresSource(): CostSource {
  return {
    name: "postgres",
    cpuMs: () => {
      let ticks = 0;
      for (const entry of readdirSync("/proc")) {
        if (entry.charCodeAt(0) < 48 || entry.charCodeAt(0) > 57) continue;
        const stat = readStat(entry);
        if (stat?.comm === "postgres") ticks += stat.ticks;
      }
      return ticks * msPerTick();
    },
  };
}

/** This process, the load generator. */
export function loadGeneratorSource(): CostSource {
  return {
    name: "load generator",
    apart: true,
    cpuMs: () => {
      const usage = process.cpuUsage();
      return (usage.user + usage.system) / 1000;
    },
  };
}

/**
 * The sources of a benchmark's system: each service process it started (by name), nats-server
 * when its pid is given, every Postgres process, and the load generator (apart).
 */
export function systemSources(
  services: Record<string, { url: string; child: { pid?: number } }>,
  natsPid?: number,
): CostSource[] {
  return [
    ...Object.entries(services).map(([name, service]) => serviceSource(name, service)),
    ...(natsPid === undefined ? [] : [processSource("nats-server", natsPid)]),
    postgresSource(),
    loadGeneratorSource(),
  ];
}

export interface PartCost {
  name: string;
  cpuMs: number;
  /** NaN where the source does not count statements. */
  statements: number;
  apart: boolean;
}

/** What a span of work cost each source, and how many operations it did. */
export interface Cost {
  parts: PartCost[];
  operations: number;
  seconds: number;
}

async function read(sources: readonly CostSource[]) {
  return Promise.all(
    sources.map(async (source) => ({
      cpuMs: source.cpuMs(),
      statements: source.statements === undefined ? Number.NaN : await source.statements(),
    })),
  );
}

/**
 * Meters `work`: CPU and statements of every source from before it starts until it resolves.
 * `work` returns how many operations it did.
 */
export async function meter(sources: readonly CostSource[], work: () => Promise<number>): Promise<Cost> {
  const before = await read(sources);
  const started = performance.now();
  const operations = await work();
  const seconds = (performance.now() - started) / 1000;
  const after = await read(sources);
  return {
    operations,
    seconds,
    parts: sources.map((source, i) => ({
      name: source.name,
      cpuMs: after[i]!.cpuMs - before[i]!.cpuMs,
      statements: after[i]!.statements - before[i]!.statements,
      apart: source.apart ?? false,
    })),
  };
}

const fixed = (value: number, digits: number) => (Number.isNaN(value) ? "–" : value.toFixed(digits));

/**
 * A markdown table of the median cost per operation of each source over `runs`, with the
 * system's total (the load generator apart): CPU ms per operation, % of one core, statements.
 */
export function costTable(runs: readonly Cost[], unit = "op"): string {
  const median = (values: number[]) => percentile(values, 0.5);
  const names = runs[0]?.parts.map((part) => part.name) ?? [];
  const rows = names.map((name) => {
    const of = (run: Cost) => run.parts.find((part) => part.name === name)!;
    return {
      name,
      apart: of(runs[0]!).apart,
      cpu: median(runs.map((run) => of(run).cpuMs / run.operations)),
      core: median(runs.map((run) => of(run).cpuMs / 10 / run.seconds)),
      statements: median(runs.map((run) => of(run).statements / run.operations)),
    };
  });
  const inSystem = rows.filter((row) => !row.apart);
  const total = {
    cpu: median(
      runs.map((run) => sum(run.parts.filter((p) => !p.apart).map((p) => p.cpuMs)) / run.operations),
    ),
    core: median(
      runs.map((run) => sum(run.parts.filter((p) => !p.apart).map((p) => p.cpuMs)) / 10 / run.seconds),
    ),
    statements: median(
      runs.map(
        (run) =>
          sum(run.parts.filter((p) => !p.apart && !Number.isNaN(p.statements)).map((p) => p.statements)) /
          run.operations,
      ),
    ),
  };
  const lines = [
    `| process | CPU ms per ${unit} | % of a core | statements per ${unit} |`,
    "|---|---|---|---|",
    ...inSystem.map(
      (row) => `| ${row.name} | ${fixed(row.cpu, 3)} | ${fixed(row.core, 1)} | ${fixed(row.statements, 2)} |`,
    ),
    `| **all of the system** | **${fixed(total.cpu, 3)}** | ${fixed(total.core, 1)} | ${fixed(total.statements, 2)} |`,
    ...rows
      .filter((row) => row.apart)
      .map((row) => `| (${row.name}, apart) | ${fixed(row.cpu, 3)} | ${fixed(row.core, 1)} | |`),
  ];
  return lines.join("\n");
}

const sum = (values: number[]) => values.reduce((total, value) => total + value, 0);
