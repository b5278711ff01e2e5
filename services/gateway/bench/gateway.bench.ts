// `pnpm bench gateway`: gift sends per second over REST through the gateway at 64 concurrent
// clients, beside the same load sent straight to the Gift service over gRPC in the same run
// (rounds alternate, medians reported; the gateway should keep ≥ 0.7 of the direct rate), and
// donation-alert delivery latency from the send to each of 1,000 subscribed WebSocket clients.
// Each path's table also gives what one send costs every process in CPU and statements.
//
// Options: --seconds N (per round, default 5), --rounds N (default 3), --senders N (default 64),
//          --sockets N (default 1000), --alerts N (default 50).
import { parseArgs } from "node:util";
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
  postJson,
  setUpGiftScene,
  startGiftGateway,
  systemSources,
} from "@ovation/testkit/bench";
import WebSocket from "ws";

const { values } = parseArgs({
  options: {
    seconds: { type: "string", default: "5" },
    rounds: { type: "string", default: "3" },
    senders: { type: "string", default: "64" },
    sockets: { type: "string", default: "1000" },
    alerts: { type: "string", default: "50" },
  },
});
const seconds = Number(values.seconds);
const rounds = Number(values.rounds);
const senders = Number(values.senders);
const socketCount = Number(values.sockets);
const alertCount = Number(values.alerts);

await using env = await testEnvironment();
await using stack = await startGiftGateway(env);
const { gift, gateway } = stack;
const sources = systemSources({ gateway, gift, wallet: stack.wallet }, env.natsPid);
/** One closed-loop round, metered: its load and what its sends cost. */
async function meteredRound(send: (worker: number) => Promise<unknown>): Promise<[LoadResult, Cost]> {
  const { load, cost } = await meteredClosedLoop(sources, senders, seconds * 1000, send);
  return [load, cost];
}
{
  const { roomId, grpcSend, restSend } = await setUp();
  // Unreported warm-up of both paths (JIT, connection pools, Postgres caches): otherwise the
  // first round of whichever path goes first runs cold.
  await closedLoop(senders, 2_000, (worker) => grpcSend(worker), 0);
  await closedLoop(senders, 2_000, (worker) => restSend(worker), 0);
  const direct: LoadResult[] = [];
  const rest: LoadResult[] = [];
  const directCost: Cost[] = [];
  const restCost: Cost[] = [];
  for (let round = 0; round < rounds; round++) {
    const [directLoad, directRound] = await meteredRound(grpcSend);
    direct.push(directLoad);
    directCost.push(directRound);
    const [restLoad, restRound] = await meteredRound(restSend);
    rest.push(restLoad);
    restCost.push(restRound);
  }
  const alerts = await alertLatencies(roomId, restSend);
  report(direct, rest, alerts);
  console.log(`\ncost per send, gRPC straight to Gift (medians of ${rounds} rounds, warm-up included)\n`);
  console.log(costTable(directCost, "send"));
  console.log(`\ncost per send, REST through the gateway (medians of ${rounds} rounds, warm-up included)\n`);
  console.log(costTable(restCost, "send"));
}

async function setUp() {
  const scene = await setUpGiftScene(env, gift.url, senders);
  const { roomId, senderTokens: tokens } = scene;
  const grpcSend = (worker: number) => scene.send(worker);
  const restSend = async (worker: number): Promise<string> => {
    const { status, body } = await postJson(`${gateway.url}/api/gifts/send`, tokens[worker]!, {
      roomId,
      giftId: "rose",
      count: 1,
      idempotencyKey: crypto.randomUUID(),
    });
    if (status !== 200) throw new Error(`HTTP ${status}: ${body}`);
    return (JSON.parse(body) as { gift: { id: string } }).gift.id;
  };
  return { roomId, grpcSend, restSend };
}

interface AlertResult {
  /** From the start of each send to its alert at each client. */
  latencies: number[];
  /** Round trip of each send itself (REST), for comparison. */
  sends: number[];
  expected: number;
}

/** Opens the sockets, then sends gifts one at a time and times each alert at every socket. */
async function alertLatencies(
  roomId: string,
  send: (worker: number) => Promise<string>,
): Promise<AlertResult> {
  const receivedAt = new Map<string, number[]>();
  const sockets: WebSocket[] = [];
  const openBatch = 100;
  for (let first = 0; first < socketCount; first += openBatch) {
    const batch = Array.from({ length: Math.min(openBatch, socketCount - first) }, async (_, i) => {
      const token = await env.token(`w${first + i}`, ["user"]);
      const socket = new WebSocket(`${gateway.url.replace("http", "ws")}/ws`, [
        "ovation.v1",
        `bearer.${token}`,
      ]);
      sockets.push(socket);
      await new Promise<void>((ready, fail) => {
        socket.once("error", fail);
        socket.on("message", (data) => {
          const message = JSON.parse(data.toString());
          if (message.type === "authenticated")
            socket.send(JSON.stringify({ op: "subscribe", channel: `room:${roomId}` }));
          else if (message.type === "subscribed") ready();
          else if (message.type === "gift.sent") {
            const at = performance.now();
            const list = receivedAt.get(message.data.sendId) ?? [];
            list.push(at);
            receivedAt.set(message.data.sendId, list);
          }
        });
      });
    });
    await Promise.all(batch);
  }
  const sentAt = new Map<string, number>();
  const sends: number[] = [];
  await new Promise((resolve) => setTimeout(resolve, 1_000)); // let the load phase's backlog settle
  for (let i = 0; i < alertCount; i++) {
    const started = performance.now();
    sentAt.set(await send(i % senders), started);
    sends.push(performance.now() - started);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  await new Promise((resolve) => setTimeout(resolve, 1_000));
  for (const socket of sockets) socket.terminate();
  const latencies: number[] = [];
  for (const [sendId, started] of sentAt) {
    for (const at of receivedAt.get(sendId) ?? []) latencies.push(at - started);
  }
  return { latencies, sends, expected: alertCount * socketCount };
}

function report(direct: LoadResult[], rest: LoadResult[], alerts: AlertResult) {
  const median = (results: LoadResult[], pick: (r: LoadResult) => number) =>
    percentile(results.map(pick), 0.5);
  const directRate = median(direct, (r) => r.perSecond);
  const restRate = median(rest, (r) => r.perSecond);
  console.log(
    `\ngift sends, ${senders} concurrent clients → one room, ${rounds} alternating rounds of ${seconds} s\n`,
  );
  console.log("| path | sends/s per round | median sends/s | median p50 / p99 ms | failed |");
  console.log("|---|---|---|---|---|");
  for (const [name, results] of [
    ["gRPC straight to Gift", direct],
    ["REST through the gateway", rest],
  ] as const) {
    console.log(
      `| ${name} | ${results.map((r) => formatRate(r.perSecond)).join(", ")} | ${formatRate(median(results, (r) => r.perSecond))} | ${formatMs(median(results, (r) => r.p50Ms))} / ${formatMs(median(results, (r) => r.p99Ms))} | ${results.reduce((sum, r) => sum + r.failed, 0)} |`,
    );
  }
  console.log(`\nratio REST / gRPC: ${(restRate / directRate).toFixed(2)} (target ≥ 0.7)\n`);
  console.log(`donation alerts: ${alertCount} gifts, each to ${socketCount} subscribed WebSocket clients\n`);
  console.log("| measure | value |");
  console.log("|---|---|");
  console.log(`| alerts delivered | ${alerts.latencies.length} of ${alerts.expected} |`);
  console.log(
    `| send round trip (REST) p50 / p99 ms | ${formatMs(percentile(alerts.sends, 0.5))} / ${formatMs(percentile(alerts.sends, 0.99))} |`,
  );
  console.log(
    `| send → alert at client p50 / p99 ms | ${formatMs(percentile(alerts.latencies, 0.5))} / ${formatMs(percentile(alerts.latencies, 0.99))} |`,
  );
}
