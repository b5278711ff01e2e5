// `pnpm bench hop`: what one internal hop costs. Three GET routes through the gateway at 64
// clients, each metered per process: /healthz (the gateway alone), /api/rooms/<unknown> (a 404
// answered by the gift service: one unary call and nothing else) and /api/gifts (the gift
// service's cached catalog). The difference between the first and the others is the price of
// a call between two of our processes, which every REST request pays at least once.
//
// Options: --seconds N (per route and round, default 5), --rounds N (default 3), --clients N
//          (default 64).
import { parseArgs } from "node:util";
import { testEnvironment } from "@ovation/testkit";
import {
  type Cost,
  closedLoop,
  costTable,
  formatMs,
  formatRate,
  httpRequest,
  type LoadResult,
  loadGeneratorSource,
  meter,
  percentile,
  serviceSource,
  setUpGiftScene,
  startGiftGateway,
} from "@ovation/testkit/bench";

const { values } = parseArgs({
  options: {
    seconds: { type: "string", default: "5" },
    rounds: { type: "string", default: "3" },
    clients: { type: "string", default: "64" },
  },
});
const seconds = Number(values.seconds);
const rounds = Number(values.rounds);
const clients = Number(values.clients);

await using env = await testEnvironment();
await using stack = await startGiftGateway(env);
const { gift, gateway } = stack;
const { senderTokens } = await setUpGiftScene(env, gift.url, clients);
const routes = ["/healthz", "/api/rooms/00000000-0000-4000-8000-000000000000", "/api/gifts"];
const get = (path: string) => async (worker: number) => {
  const { status } = await httpRequest(`${gateway.url}${path}`, {
    headers: { authorization: `Bearer ${senderTokens[worker]}` },
  });
  if (status >= 500) throw new Error(`HTTP ${status}`);
};
for (const path of routes) await closedLoop(clients, 1_000, get(path), 0); // warm-up
const sources = [serviceSource("gateway", gateway), serviceSource("gift", gift), loadGeneratorSource()];
const results = new Map<string, { load: LoadResult; cost: Cost }[]>(routes.map((path) => [path, []]));
for (let round = 0; round < rounds; round++) {
  for (const path of routes) {
    let load: LoadResult | undefined;
    const cost = await meter(sources, async () => {
      load = await closedLoop(clients, seconds * 1000, get(path), 0);
      return load.completed;
    });
    results.get(path)!.push({ load: load!, cost });
  }
}

console.log(`\nGET through the gateway, ${clients} clients, ${rounds} rounds of ${seconds} s per route\n`);
for (const [path, runs] of results) {
  const median = (pick: (load: LoadResult) => number) =>
    percentile(
      runs.map((run) => pick(run.load)),
      0.5,
    );
  console.log(
    `${path}: ${formatRate(median((l) => l.perSecond))} requests/s, p50 / p99 ${formatMs(median((l) => l.p50Ms))} / ${formatMs(median((l) => l.p99Ms))} ms, failed ${runs.reduce((sum, run) => sum + run.load.failed, 0)}\n`,
  );
  console.log(
    costTable(
      runs.map((run) => run.cost),
      "request",
    ),
  );
  console.log();
}
