// `pnpm bench boosts`: fan-out of BoostPurchased through its three durable consumers, and the
// replay rate of one projection.
//
// 1. Fan-out: wallet, gift, PK and the gateway (with its notification database) run as their
//    own processes. N BoostPurchased events (a mix of host, room and PK-side targets, each
//    naming a host, so the gateway writes a notification for each) are published on the WALLET
//    stream as the wallet's relay publishes them, all at once. Reported per consumer (gift
//    discovery, PK side boosts, gateway notifications): events/s from the first publish until
//    its inbox holds all N, and when all three are done; and what one event costs each process
//    in CPU and statements (the publishing load generator apart).
// 2. Replay: `./ov replay gift-discovery` (the CLI itself) rebuilds the discovery projection
//    from those N events while the gift service runs; events/s of each run and the median.
//
// Options: --events N (default 20000), --replays N (default 3).
import { spawnSync } from "node:child_process";
import { resolve } from "node:path";
import { parseArgs } from "node:util";
import { create, toBinary } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { headers as natsHeaders } from "@nats-io/nats-core";
import { bearerInterceptor } from "@ovation/auth";
import { EventBus, headerNames } from "@ovation/events";
import { GiftService } from "@ovation/proto/gen/ovation/gift/v1/gift_pb.ts";
import { BoostPurchasedSchema, BoostTargetType } from "@ovation/proto/gen/ovation/wallet/v1/events_pb.ts";
import { testEnvironment, testStreamMaxBytes, waitFor } from "@ovation/testkit";
import { costTable, formatRate, meter, startServiceProcess, systemSources } from "@ovation/testkit/bench";
import pg from "pg";

const { values } = parseArgs({
  options: { events: { type: "string", default: "20000" }, replays: { type: "string", default: "3" } },
});
const total = Number(values.events);
const replays = Number(values.replays);
const root = resolve(import.meta.dirname, "../../..");
const service = (name: string) => resolve(root, `services/${name}/src/main.ts`);

await using env = await testEnvironment();
const quiet = { ...env.env, LOG_LEVEL: process.env.BENCH_LOG_LEVEL ?? "warn" };
await using wallet = await startServiceProcess(service("wallet"), quiet);
await using pk = await startServiceProcess(service("pk"), quiet);
await using gift = await startServiceProcess(service("gift"), {
  ...quiet,
  WALLET_URL: wallet.url,
  PK_URL: pk.url,
});
await using gateway = await startServiceProcess(service("gateway"), {
  ...quiet,
  WALLET_URL: wallet.url,
  GIFT_URL: gift.url,
  PK_URL: pk.url,
});

// Ten live rooms to rank; their hosts are the targets.
const hosts = Array.from({ length: 10 }, (_, i) => `bench-host-${i}`);
const rooms: string[] = [];
for (const host of hosts) {
  const client = createClient(
    GiftService,
    createGrpcTransport({
      baseUrl: gift.url,
      interceptors: [bearerInterceptor(async () => env.token(host, ["host"]))],
    }),
  );
  rooms.push((await client.startLive({ title: "boost bench" })).room!.id);
}

const bus = await EventBus.connect({
  url: env.natsUrl,
  prefix: env.prefix,
  name: "boost-bench",
  streamMaxBytes: testStreamMaxBytes,
  ...env.natsOps,
});
const db = new pg.Client({ connectionString: env.databaseUrl });
await db.connect();
const inboxCount = async (schema: string, consumer: string) =>
  (
    await db.query<{ n: number }>(`select count(*)::int as n from ${schema}.inbox where consumer = $1`, [
      consumer,
    ])
  ).rows[0]!.n;
const consumers = [
  { label: "gift discovery", schema: "gift", name: "gift-discovery" },
  { label: "pk side boosts", schema: "pk", name: "pk-side-boosts" },
  { label: "gateway notifications", schema: "gateway", name: "gateway-boost-notifications" },
];

function boostEvent(i: number) {
  const boostId = crypto.randomUUID();
  const host = hosts[i % hosts.length]!;
  const kind = i % 3;
  const target =
    kind === 0
      ? { targetType: BoostTargetType.HOST, targetId: host }
      : kind === 1
        ? { targetType: BoostTargetType.ROOM, targetId: rooms[i % rooms.length]! }
        : { targetType: BoostTargetType.PK_SIDE, targetId: `${crypto.randomUUID()}:A` };
  const now = new Date();
  const message = create(BoostPurchasedSchema, {
    boostId,
    buyerId: `bench-fan-${i % 1000}`,
    ...target,
    hostIds: [host],
    money: { asset: "COIN", amount: BigInt(10 + (i % 1000)) },
    durationHours: 24,
    startTime: timestampFromDate(now),
    expireTime: timestampFromDate(new Date(now.getTime() + 24 * 3_600_000)),
  });
  const headers = natsHeaders();
  headers.set(headerNames.eventId, boostId);
  headers.set(headerNames.eventType, BoostPurchasedSchema.typeName);
  return { boostId, payload: toBinary(BoostPurchasedSchema, message), headers };
}

console.log(`fan-out: ${formatRate(total)} BoostPurchased events through 3 durable consumers`);
const sources = systemSources({ gift, pk, gateway, wallet }, env.natsPid);
let started = 0;
const doneAt = new Map<string, number>();
const fanOutCost = await meter(sources, async () => {
  started = performance.now();
  const publishWindow = 500;
  for (let from = 0; from < total; from += publishWindow) {
    await Promise.all(
      Array.from({ length: Math.min(publishWindow, total - from) }, (_, k) => {
        const event = boostEvent(from + k);
        return bus.js.publish(bus.names.subject("wallet.boost.purchased"), event.payload, {
          msgID: event.boostId,
          headers: event.headers,
        });
      }),
    );
  }
  const publishedMs = performance.now() - started;
  console.log(
    `  published in ${Math.round(publishedMs)} ms (${formatRate(total / (publishedMs / 1000))} events/s)`,
  );
  await waitFor(
    async () => {
      for (const consumer of consumers) {
        if (doneAt.has(consumer.name)) continue;
        if ((await inboxCount(consumer.schema, consumer.name)) >= total)
          doneAt.set(consumer.name, performance.now());
      }
      return doneAt.size === consumers.length;
    },
    { timeoutMs: 600_000, intervalMs: 100, what: "every consumer to apply every event" },
  );
  return total;
});
for (const consumer of consumers) {
  const seconds = (doneAt.get(consumer.name)! - started) / 1000;
  console.log(
    `  ${consumer.label.padEnd(22)} ${formatRate(total / seconds)} events/s (${seconds.toFixed(1)} s)`,
  );
}
const allSeconds = (Math.max(...doneAt.values()) - started) / 1000;
console.log(
  `  all three                ${formatRate(total / allSeconds)} events/s each, ${formatRate((3 * total) / allSeconds)} deliveries/s in all`,
);

console.log(`\ncost per BoostPurchased event, through all three consumers\n`);
console.log(costTable([fanOutCost], "event"));
console.log(`\nreplay: ./ov replay gift-discovery over ${formatRate(total)} events, ${replays} runs`);
const rates: number[] = [];
for (let run = 1; run <= replays; run++) {
  const replay = spawnSync(
    process.execPath,
    [resolve(root, "services/gift/src/cli.ts"), "replay", "gift-discovery"],
    {
      env: { ...process.env, ...quiet },
      encoding: "utf8",
    },
  );
  if (replay.status !== 0) throw new Error(`replay failed: ${replay.stderr}`);
  const line = replay.stdout.trim().split("\n").at(-1)!;
  const rate = Number(/, (\d+) events\/s/.exec(line)?.[1] ?? Number.NaN);
  rates.push(rate);
  console.log(`  run ${run}: ${line}`);
}
rates.sort((a, b) => a - b);
console.log(`  median replay rate ${formatRate(rates[Math.floor(rates.length / 2)]!)} events/s`);
await bus.close();
await db.end();
