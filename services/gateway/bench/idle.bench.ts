// `pnpm bench idle`: what the stack costs when nobody uses it. Starts the whole `./ov up` stack
// (startStack) on a fresh database and nats-server, lets it settle, then meters CPU over
// --seconds from /proc (cost.ts): every service process, the nats-server and Postgres as a whole
// server (so, on a shared machine, run it alone). Reported as % of one core per process and in
// total, medians of --rounds (decision 0035: the target is ≤ 1 % in all).
//
// Options: --seconds N (per round, default 30), --rounds N (default 3), --settle N (seconds
// after the start, default 10).
import { setTimeout as delay } from "node:timers/promises";
import { parseArgs } from "node:util";
import { testEnvironment } from "@ovation/testkit";
import {
  type Cost,
  meter,
  percentile,
  postgresSource,
  processSource,
  startStack,
} from "@ovation/testkit/bench";

const { values } = parseArgs({
  options: {
    seconds: { type: "string", default: "30" },
    rounds: { type: "string", default: "3" },
    settle: { type: "string", default: "10" },
  },
});
const seconds = Number(values.seconds);
const rounds = Number(values.rounds);

await using env = await testEnvironment();
await using stack = await startStack(env, { env: { LOG_LEVEL: process.env.BENCH_LOG_LEVEL ?? "warn" } });
await delay(Number(values.settle) * 1000);
const sources = [
  ...[...stack.services].map(([name, service]) => processSource(name, service.child.pid!)),
  processSource("nats-server", env.natsPid),
  postgresSource(),
];
const runs: Cost[] = [];
for (let round = 0; round < rounds; round++) {
  runs.push(
    await meter(sources, async () => {
      await delay(seconds * 1000);
      return 1;
    }),
  );
}

const core = (cost: Cost, name?: string) =>
  cost.parts.filter((part) => name === undefined || part.name === name).reduce((sum, p) => sum + p.cpuMs, 0) /
  10 /
  cost.seconds;
console.log(`\nthe idle stack, ${rounds} rounds of ${seconds} s: % of one core (median)\n`);
console.log("| process | % of a core |");
console.log("|---|---|");
for (const part of runs[0]!.parts) {
  console.log(
    `| ${part.name} | ${percentile(
      runs.map((run) => core(run, part.name)),
      0.5,
    ).toFixed(2)} |`,
  );
}
console.log(
  `| **all** | **${percentile(
    runs.map((run) => core(run)),
    0.5,
  ).toFixed(2)}** (rounds: ${runs.map((run) => core(run).toFixed(2)).join(", ")}) |`,
);
console.log("\ntarget: ≤ 1 % of a core in all");
