// `pnpm bench fanout`: a room with many viewers and a burst of gifts into it (issue 20, 0033).
// 2,000 WebSocket clients subscribe to one room, then 2,000 REST gift sends arrive at once
// while /readyz and an unrelated REST read are probed every 50 ms from a worker thread (its own
// event loop, so the load generator's busy main thread does not inflate them), and /readyz on the
// management port (MANAGEMENT_PORT, 0055) as a balancer probes it: a new connection each time.
// Reported: REST
// answers of the burst (p50 / p99 / max, non-2xx by status), the probes' latencies, room frames
// per socket against the ticks the burst lasted, alerts delivered or counted as dropped, the
// sockets that received a marker gift sent after the burst, and what one send of the burst cost
// every process in CPU and statements, from the burst's start until every socket settled.
// Target: every REST answer within 5 s (a result or a 503 with Retry-After), /readyz within
// 100 ms, every socket still receiving its room.
//
// Options: --sockets N (default 2000), --sends N (default 2000), --tick-ms N (WS_ROOM_TICK_MS,
//          default 200), --batch-max N (WS_ROOM_BATCH_MAX, default 20).
import { parseArgs } from "node:util";
import { Worker } from "node:worker_threads";
import { testEnvironment } from "@ovation/testkit";
import {
  costTable,
  formatMs,
  freePort,
  meter,
  percentile,
  postJson,
  setUpGiftScene,
  startGiftGateway,
  systemSources,
} from "@ovation/testkit/bench";
import WebSocket from "ws";

const { values } = parseArgs({
  options: {
    sockets: { type: "string", default: "2000" },
    sends: { type: "string", default: "2000" },
    "tick-ms": { type: "string", default: "200" },
    "batch-max": { type: "string", default: "20" },
  },
});
const socketCount = Number(values.sockets);
const sendCount = Number(values.sends);
const tickMs = Number(values["tick-ms"]);
const batchMax = Number(values["batch-max"]);
/** How long the bench waits for every socket to account for every alert. */
const settleTimeoutMs = 120_000;
const probeIntervalMs = 50;

await using env = await testEnvironment();
const managementPort = await freePort();
await using stack = await startGiftGateway(env, {
  WS_ROOM_TICK_MS: String(tickMs),
  WS_ROOM_BATCH_MAX: String(batchMax),
  MANAGEMENT_PORT: String(managementPort),
});
const { gift, gateway } = stack;

interface Viewer {
  socket: WebSocket;
  /** Frames that carried room messages (a coalesced frame, or a lone gift.sent before 0033). */
  roomFrames: number;
  alerts: Set<string>;
  dropped: number;
}

const scene = await setUpGiftScene(env, gift.url, sendCount);
const channel = `room:${scene.roomId}`;
const viewers = await openViewers();
await new Promise((done) => setTimeout(done, 1_000)); // let the sockets' set-up settle
const probes = startProbes();
const sources = systemSources({ gateway, gift, wallet: stack.wallet }, env.natsPid);
let burstAnsweredMs = 0;
let settledMs = 0;
let burst: SendReply[] = [];
let sentIds = new Set<string>();
const accounted = (viewer: Viewer) => viewer.alerts.size + viewer.dropped >= sentIds.size;
let burstStart = 0;
const burstCost = await meter(sources, async () => {
  burstStart = performance.now();
  burst = await Promise.all(Array.from({ length: sendCount }, (_, worker) => restSend(worker)));
  burstAnsweredMs = performance.now() - burstStart;
  sentIds = new Set(burst.flatMap((reply) => (reply.sendId === undefined ? [] : [reply.sendId])));
  await waitUntil(() => viewers.every(accounted), settleTimeoutMs);
  settledMs = performance.now() - burstStart;
  return sendCount;
});
const probeResults = await probes.stop();
const cpuDuringMs = burstCost.parts.find((part) => part.name === "gateway")!.cpuMs;
const framesAfterBurst = viewers.map((viewer) => viewer.roomFrames);
// A marker after the burst: every socket must still be receiving its room.
const marker = await restSend(0);
const markerSeen = (viewer: Viewer) => marker.sendId !== undefined && viewer.alerts.has(marker.sendId);
await waitUntil(() => viewers.every(markerSeen), 30_000);
report();
for (const viewer of viewers) viewer.socket.terminate();

async function openViewers(): Promise<Viewer[]> {
  const opened: Viewer[] = [];
  for (let first = 0; first < socketCount; first += 100) {
    const batch = Array.from({ length: Math.min(100, socketCount - first) }, async (_, i) => {
      const token = await env.token(`viewer${first + i}`, ["user"]);
      const socket = new WebSocket(`${gateway.url.replace("http", "ws")}/ws`, [
        "ovation.v1",
        `bearer.${token}`,
      ]);
      const viewer: Viewer = { socket, roomFrames: 0, alerts: new Set(), dropped: 0 };
      await new Promise<void>((ready, fail) => {
        socket.once("error", fail);
        socket.on("message", (data) => {
          const frame = JSON.parse(data.toString());
          if (frame.type === "authenticated") socket.send(JSON.stringify({ op: "subscribe", channel }));
          else if (frame.type === "subscribed") ready();
          else if (frame.type === "dropped") viewer.dropped += frame.count;
          else if (frame.channel === channel) {
            viewer.roomFrames++;
            const messages = frame.type === "batch" ? frame.messages : [frame];
            viewer.dropped += frame.dropped ?? 0;
            for (const message of messages)
              if (message.type === "gift.sent") viewer.alerts.add(message.data.sendId);
          }
        });
      });
      return viewer;
    });
    opened.push(...(await Promise.all(batch)));
  }
  return opened;
}

interface SendReply {
  status: number;
  ms: number;
  retryAfter: string | null;
  sendId?: string;
}

async function restSend(worker: number): Promise<SendReply> {
  const started = performance.now();
  try {
    const { status, headers, body } = await postJson(
      `${gateway.url}/api/gifts/send`,
      scene.senderTokens[worker]!,
      {
        roomId: scene.roomId,
        giftId: "rose",
        count: 1,
        idempotencyKey: crypto.randomUUID(),
      },
    );
    const retryAfter = headers["retry-after"];
    return {
      status,
      ms: performance.now() - started,
      retryAfter: typeof retryAfter === "string" ? retryAfter : null,
      sendId: status === 200 ? (JSON.parse(body) as { gift?: { id: string } }).gift?.id : undefined,
    };
  } catch {
    return { status: 0, ms: performance.now() - started, retryAfter: null };
  }
}

/** Probes /readyz and GET /api/gifts every 50 ms from a worker thread until stopped. */
function startProbes(): { stop(): Promise<Record<string, { status: number; ms: number }[]>> } {
  const code = `
    const { parentPort, workerData } = require("node:worker_threads");
    const http = require("node:http");
    const results = { readyz: [], gifts: [], managementReadyz: [] };
    let running = true;
    const timed = async (name, path) => {
      const started = performance.now();
      let status = 0;
      try { const response = await fetch(workerData.url + path); await response.arrayBuffer(); status = response.status; } catch {}
      results[name].push({ status, ms: performance.now() - started });
    };
    // As a balancer probes: a new connection each time (no agent, no keep-alive).
    const probed = (name, url) => new Promise((done) => {
      const started = performance.now();
      const finish = (status) => { results[name].push({ status, ms: performance.now() - started }); done(); };
      http.get(url, { agent: false }, (response) => { response.resume(); response.on("end", () => finish(response.statusCode)); }).on("error", () => finish(0));
    });
    const pending = [];
    const tick = () => {
      if (!running) return;
      pending.push(
        timed("readyz", "/readyz"),
        timed("gifts", "/api/gifts"),
        probed("managementReadyz", workerData.managementUrl + "/readyz"),
      );
      setTimeout(tick, workerData.intervalMs);
    };
    tick();
    parentPort.on("message", async () => {
      running = false;
      await Promise.all(pending);
      parentPort.postMessage(results);
    });`;
  const worker = new Worker(code, {
    eval: true,
    workerData: {
      url: gateway.url,
      managementUrl: `http://127.0.0.1:${managementPort}`,
      intervalMs: probeIntervalMs,
    },
  });
  return {
    stop: async () => {
      const results = new Promise<Record<string, { status: number; ms: number }[]>>((done) =>
        worker.once("message", done),
      );
      worker.postMessage("stop");
      const value = await results;
      await worker.terminate();
      return value;
    },
  };
}

async function waitUntil(condition: () => boolean, timeoutMs: number): Promise<boolean> {
  const deadline = performance.now() + timeoutMs;
  while (!condition()) {
    if (performance.now() > deadline) return false;
    await new Promise((done) => setTimeout(done, 50));
  }
  return true;
}

/** Answers other than 200 by status (0: no answer, the connection failed). */
function nonOk(results: { status: number }[]): string {
  const counts = new Map<number, number>();
  for (const { status } of results) if (status !== 200) counts.set(status, (counts.get(status) ?? 0) + 1);
  return counts.size === 0
    ? "all 200"
    : [...counts].map(([status, count]) => `${count}× ${status}`).join(", ");
}

function report(): void {
  const latencies = burst.map((reply) => reply.ms);
  const statuses = new Map<string, number>();
  for (const reply of burst) {
    if (reply.status === 200) continue;
    const label =
      reply.status === 503 && reply.retryAfter !== null ? "503 + Retry-After" : String(reply.status);
    statuses.set(label, (statuses.get(label) ?? 0) + 1);
  }
  const ticks = Math.floor(settledMs / tickMs) + 1;
  const accountedSockets = viewers.filter(accounted).length;
  const lostAlerts = viewers.reduce(
    (sum, viewer) => sum + Math.max(0, sentIds.size - viewer.alerts.size - viewer.dropped),
    0,
  );
  const delivered = viewers.reduce((sum, viewer) => sum + viewer.alerts.size, 0);
  const stats = (results: { status: number; ms: number }[]) =>
    `${formatMs(
      percentile(
        results.map((r) => r.ms),
        0.5,
      ),
    )} / ${formatMs(
      percentile(
        results.map((r) => r.ms),
        0.99,
      ),
    )} / ${formatMs(Math.max(...results.map((r) => r.ms)))} (${nonOk(results)} of ${results.length})`;
  console.log(
    `\nroom fan-out: ${socketCount} sockets on one room, a burst of ${sendCount} REST gift sends at once; WS_ROOM_TICK_MS ${tickMs}, WS_ROOM_BATCH_MAX ${batchMax}\n`,
  );
  console.log("| measure | value |");
  console.log("|---|---|");
  console.log(`| burst answered (last REST reply) | ${formatMs(burstAnsweredMs)} ms |`);
  console.log(
    `| REST send answers p50 / p99 / max ms | ${formatMs(percentile(latencies, 0.5))} / ${formatMs(percentile(latencies, 0.99))} / ${formatMs(Math.max(...latencies))} |`,
  );
  console.log(`| sends accepted (200) | ${sentIds.size} of ${sendCount} |`);
  console.log(
    `| non-2xx answers | ${[...statuses].map(([label, count]) => `${count}× ${label}`).join(", ") || "none"} |`,
  );
  console.log(`| /readyz p50 / p99 / max ms (every 50 ms) | ${stats(probeResults.readyz!)} |`);
  console.log(
    `| /readyz on the management port, a new connection each (every 50 ms) | ${stats(probeResults.managementReadyz!)} |`,
  );
  console.log(`| GET /api/gifts p50 / p99 / max ms (every 50 ms) | ${stats(probeResults.gifts!)} |`);
  console.log(
    `| burst start → every socket settled | ${formatMs(settledMs)} ms (${ticks} ticks + 1 allowed) |`,
  );
  console.log(
    `| room frames per socket median / max | ${percentile(framesAfterBurst, 0.5)} / ${Math.max(...framesAfterBurst)} |`,
  );
  console.log(
    `| frames per socket ≤ ticks + 1 | ${framesAfterBurst.filter((frames) => frames <= ticks).length} of ${socketCount} sockets |`,
  );
  console.log(
    `| alerts delivered / counted dropped (all sockets) | ${delivered} / ${viewers.reduce((sum, v) => sum + v.dropped, 0)} (of ${sentIds.size * socketCount}); unaccounted ${lostAlerts} |`,
  );
  console.log(`| sockets with every alert delivered or counted | ${accountedSockets} of ${socketCount} |`);
  console.log(
    `| sockets that received the marker gift after the burst | ${viewers.filter(markerSeen).length} of ${socketCount} |`,
  );
  console.log(`| gateway CPU, burst start → settled | ${formatMs(cpuDuringMs)} ms |`);
  console.log("\ncost per REST send of the burst (burst start → every socket settled)\n");
  console.log(costTable([burstCost], "send"));
}
