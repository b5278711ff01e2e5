// `pnpm bench pk`: one SOLO battle between two live hosts while 200 senders send 1-point roses
// to both rooms for 30 s (closed loop, straight to the Gift service over gRPC). A WebSocket
// client on the gateway watches `pk:<id>`. Reported: gifts/s, the latency of each live score
// update from its scoring (BattleScored.scored_time) to the client, score updates per second
// (the PK service coalesces them to ≤ 10/s), and the settled score beside the sum of the points
// of the gift debits the ledger committed inside the battle's window, which must be equal; and
// what one send costs each process in CPU and statements, from the first send until the
// battle's result reached the client.
//
// Options: --seconds N (load, default 30), --senders N (default 200).
import { resolve } from "node:path";
import { parseArgs } from "node:util";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { type Client, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { bearerInterceptor } from "@ovation/auth";
import { GiftService } from "@ovation/proto/gen/ovation/gift/v1/gift_pb.ts";
import { BattleMode, BattleState, PkService, TiePolicy } from "@ovation/proto/gen/ovation/pk/v1/pk_pb.ts";
import { testEnvironment, waitFor } from "@ovation/testkit";
import {
  costTable,
  formatMs,
  formatRate,
  meteredClosedLoop,
  percentile,
  seedFundedUsers,
  startServiceProcess,
  systemSources,
} from "@ovation/testkit/bench";
import pg from "pg";
import WebSocket from "ws";

const { values } = parseArgs({
  options: { seconds: { type: "string", default: "30" }, senders: { type: "string", default: "200" } },
});
const seconds = Number(values.seconds);
const senders = Number(values.senders);
const service = (name: string) => resolve(import.meta.dirname, `../../${name}/src/main.ts`);

await using env = await testEnvironment();
const quiet = { ...env.env, LOG_LEVEL: process.env.BENCH_LOG_LEVEL ?? "warn", DATABASE_POOL_MAX: "20" };
await using wallet = await startServiceProcess(service("wallet"), quiet);
await using gift = await startServiceProcess(service("gift"), { ...quiet, WALLET_URL: wallet.url });
await using pk = await startServiceProcess(service("pk"), { ...quiet, PK_DURATION_MIN_SECONDS: "1" });
await using gateway = await startServiceProcess(service("gateway"), {
  ...quiet,
  WALLET_URL: wallet.url,
  GIFT_URL: gift.url,
  PK_URL: pk.url,
});

const grpc = <S extends Parameters<typeof createClient>[0]>(svc: S, url: string, token: string) =>
  createClient(svc, createGrpcTransport({ baseUrl: url, interceptors: [bearerInterceptor(() => token)] }));
const adminToken = await env.token("bench-admin", ["admin"]);
const giftAdmin = grpc(GiftService, gift.url, adminToken) as Client<typeof GiftService>;
await giftAdmin.createGift({
  gift: {
    id: "rose",
    name: "Rose",
    price: 1n,
    pkPoints: 1n,
    vipOnly: false,
    minVipLevel: 0,
    animationKey: "rose",
  },
});
const hosts = ["host-a", "host-b"] as const;
const rooms: string[] = [];
for (const host of hosts) {
  const client = grpc(GiftService, gift.url, await env.token(host, ["host"])) as Client<typeof GiftService>;
  rooms.push((await client.startLive({ title: "pk bench" })).room!.id);
}
const db = new pg.Client({ connectionString: env.databaseUrl });
await db.connect();
await seedFundedUsers(db, "s", senders, 1_000_000_000n);
const senderClients = await Promise.all(
  Array.from(
    { length: senders },
    async (_, i) =>
      grpc(GiftService, gift.url, await env.token(`s${i + 1}`, ["user"])) as Client<typeof GiftService>,
  ),
);

// The battle: long enough for a short warm-up, the load, and a margin; a draw settles at once.
const pkAdmin = grpc(PkService, pk.url, adminToken) as Client<typeof PkService>;
const warmupMs = 1_000;
const battle = await waitFor(
  async () =>
    pkAdmin
      .createBattle({
        mode: BattleMode.SOLO,
        sideA: [hosts[0]],
        sideB: [hosts[1]],
        durationSeconds: seconds + 3,
        tiePolicy: TiePolicy.DRAW,
        idempotencyKey: "bench",
      })
      .then((r) => r.battle!)
      .catch(() => undefined),
  { what: "both hosts live in PK" },
);

// One WebSocket client on the battle's channel.
const updates: { receivedAt: number; scoredAt: number; points: bigint[] }[] = [];
let endedPoints: bigint[] | undefined;
const socket = new WebSocket(`${gateway.url.replace("http", "ws")}/ws`, [
  "ovation.v1",
  `bearer.${await env.token("watcher", ["user"])}`,
]);
await new Promise<void>((ready, fail) => {
  socket.once("error", fail);
  socket.on("message", (data) => {
    const message = JSON.parse(data.toString());
    if (message.type === "authenticated")
      socket.send(JSON.stringify({ op: "subscribe", channel: `pk:${battle.id}` }));
    else if (message.type === "subscribed") ready();
    else if (message.type === "pk.scored")
      updates.push({
        receivedAt: Date.now(),
        scoredAt: new Date(message.data.scoredTime).getTime(),
        points: message.data.sides.map((s: { points: string }) => BigInt(s.points)),
      });
    else if (message.type === "pk.ended")
      endedPoints = message.data.sides.map((s: { points: string }) => BigInt(s.points));
  });
});

const { load, cost } = await meteredClosedLoop(
  systemSources({ gift, wallet, pk, gateway }, env.natsPid),
  senders,
  seconds * 1_000,
  (worker) =>
    senderClients[worker]!.sendGift({
      roomId: rooms[worker % 2]!,
      giftId: "rose",
      count: 1,
      idempotencyKey: crypto.randomUUID(),
    }),
  {
    warmupMs,
    settle: () => waitFor(() => endedPoints, { timeoutMs: 60_000, what: "the battle's result on pk:<id>" }),
  },
);
socket.terminate();

const settled = (await pkAdmin.getBattle({ battleId: battle.id })).battle!;
if (settled.state !== BattleState.SETTLED) throw new Error(`battle ended in state ${settled.state}`);
const start = timestampDate(settled.startTime!);
const end = timestampDate(settled.endTime!);
// What the ledger committed inside the window, per room, from the wallet's journal.
const { rows } = await db.query<{ room_id: string; points: string }>(
  `select s.room_id, sum(t.amount)::text as points
   from wallet.transfers t join gift.sends s on s.id = t.carried_event_id
   where t.kind = 5 and t.created_at >= $1 and t.created_at < $2 group by s.room_id`,
  [start, end],
);
await db.end();
const ledger = rooms.map((room) => BigInt(rows.find((r) => r.room_id === room)?.points ?? "0"));
const final = settled.sides.map((s) => s.points);

const latencies = updates.map((u) => u.receivedAt - u.scoredAt);
const perSecond = new Map<number, number>();
for (const u of updates) {
  const second = Math.floor(u.scoredAt / 1_000);
  perSecond.set(second, (perSecond.get(second) ?? 0) + 1);
}
const busiest = Math.max(0, ...perSecond.values());
const activeSeconds = (end.getTime() - start.getTime()) / 1_000;

console.log(`\nPK battle, ${senders} senders → 2 hosts, ${seconds} s of load\n`);
console.log("| measure | value |");
console.log("|---|---|");
console.log(`| gifts/s (paid sends) | ${formatRate(load.perSecond)} (failed ${load.failed}) |`);
console.log(`| send latency p50 / p99 ms | ${formatMs(load.p50Ms)} / ${formatMs(load.p99Ms)} |`);
console.log(
  `| score update: scored → WebSocket client p50 / p99 ms | ${formatMs(percentile(latencies, 0.5))} / ${formatMs(percentile(latencies, 0.99))} |`,
);
console.log(
  `| score updates per second: mean / busiest second (limit 10) | ${(updates.length / activeSeconds).toFixed(1)} / ${busiest} |`,
);
console.log(`| settled score A : B | ${final.join(" : ")} (${settled.reason}) |`);
console.log(`| ledger's committed gift points in the window A : B | ${ledger.join(" : ")} |`);
console.log(
  `| score equals the ledger | ${final.every((p, i) => p === ledger[i]) ? "yes, exactly" : "NO"} |`,
);
console.log(
  `| last live update A : B / pk.ended A : B | ${updates.at(-1)?.points.join(" : ")} / ${endedPoints?.join(" : ")} |`,
);
console.log("\ncost per send (warm-up included, until the result reached the client)\n");
console.log(costTable([cost], "send"));
