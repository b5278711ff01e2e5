// `pnpm bench transport`: what one internal unary call costs in each protocol connect-node
// speaks, client and server together in this process (64 calls in flight, a small catalog
// answer): gRPC over HTTP/2, the Connect protocol over HTTP/2 (what services and the gateway use
// between themselves, docs/decisions/0047) and the Connect protocol over HTTP/1.1 with keep-alive.
// Reported: CPU milliseconds per call (median of the rounds) and calls per second.
//
// Options: --calls N (per round and protocol, default 20000), --rounds N (default 3).
import http from "node:http";
import { parseArgs } from "node:util";
import { create } from "@bufbuild/protobuf";
import { createClient, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import {
  GiftService,
  type ListGiftsResponse,
  ListGiftsResponseSchema,
} from "@ovation/proto/gen/ovation/gift/v1/gift_pb.ts";
import { createLogger, startServer } from "@ovation/server";
import { formatRate, percentile } from "@ovation/testkit/bench";

const { values } = parseArgs({
  options: { calls: { type: "string", default: "20000" }, rounds: { type: "string", default: "3" } },
});
const calls = Number(values.calls);
const rounds = Number(values.rounds);
const inFlight = 64;

const catalog: ListGiftsResponse = create(ListGiftsResponseSchema, {
  gifts: Array.from({ length: 5 }, (_, i) => ({
    giftId: `gift-${i}`,
    name: "Rose",
    price: 10n,
    pkPoints: 1n,
  })),
});
await using server = await startServer({
  name: "bench",
  host: "127.0.0.1",
  port: 0,
  logger: createLogger("bench", "silent"),
  verifyToken: async () => {
    throw new Error("no tokens in this bench");
  },
  services: [GiftService],
  routes: (router) => router.service(GiftService, { listGifts: () => catalog }),
});
const baseUrl = server.url;

const transports: Record<string, () => Transport> = {
  "gRPC, HTTP/2": () => createGrpcTransport({ baseUrl, acceptCompression: [] }),
  "Connect, HTTP/2": () => createConnectTransport({ baseUrl, httpVersion: "2", acceptCompression: [] }),
  "Connect, HTTP/1.1": () =>
    createConnectTransport({
      baseUrl,
      httpVersion: "1.1",
      acceptCompression: [],
      nodeOptions: { agent: new http.Agent({ keepAlive: true, maxSockets: inFlight }) },
    }),
};

const results = new Map<string, { cpuMs: number; perSecond: number }[]>();
for (let round = 0; round < rounds; round++) {
  for (const [name, make] of Object.entries(transports)) {
    const client = createClient(GiftService, make());
    const run = async (count: number, workers: number) => {
      let started = 0;
      const worker = async () => {
        while (started < count) {
          started++;
          await client.listGifts({});
        }
      };
      await Promise.all(Array.from({ length: workers }, worker));
    };
    await run(2_000, inFlight); // connections open, JIT warm
    const cpuBefore = process.cpuUsage();
    const startedAt = performance.now();
    await run(calls, inFlight);
    const cpu = process.cpuUsage(cpuBefore);
    const seconds = (performance.now() - startedAt) / 1000;
    const list = results.get(name) ?? [];
    list.push({ cpuMs: (cpu.user + cpu.system) / 1000 / calls, perSecond: calls / seconds });
    results.set(name, list);
  }
}

console.log(
  `\none unary call, client and server in one process, ${inFlight} in flight, ${rounds} rounds of ${calls}\n`,
);
console.log("| protocol | CPU ms per call (rounds) | median CPU ms per call | median calls/s |");
console.log("|---|---|---|---|");
for (const [name, list] of results) {
  console.log(
    `| ${name} | ${list.map((r) => r.cpuMs.toFixed(3)).join(", ")} | ${percentile(
      list.map((r) => r.cpuMs),
      0.5,
    ).toFixed(3)} | ${formatRate(
      percentile(
        list.map((r) => r.perSecond),
        0.5,
      ),
    )} |`,
  );
}
