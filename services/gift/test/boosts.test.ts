// Boosts end to end against the real wallet, gift and PK services, Postgres and NATS: buying
// (validation, targets, idempotency, payment with its event), the discovery ranking and the PK
// side display built by their own durable consumers, a consumer that was down catching up,
// expiry on time through the durable timers (also across a restart) and a replay that rebuilds
// the ranking exactly while new boosts arrive.
import { spawnSync } from "node:child_process";
import { resolve } from "node:path";
import { create, toBinary } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { headers as natsHeaders } from "@nats-io/nats-core";
import { EventBus, headerNames, replayProjection } from "@ovation/events";
import { type PkApp, startPk } from "@ovation/pk";
import { GiftService } from "@ovation/proto/gen/ovation/gift/v1/gift_pb.ts";
import { BattleMode, PkService, TiePolicy } from "@ovation/proto/gen/ovation/pk/v1/pk_pb.ts";
import { BoostPurchasedSchema, BoostTargetType } from "@ovation/proto/gen/ovation/wallet/v1/events_pb.ts";
import { WalletService } from "@ovation/proto/gen/ovation/wallet/v1/wallet_pb.ts";
import { FaultProxy, testStreamMaxBytes, waitFor } from "@ovation/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { purchaseBoost } from "../src/app/boosts.ts";
import { discoveryConsumer } from "../src/events/discovery-consumer.ts";
import { type GiftApp, startGift } from "../src/main.ts";
import { answerHeldBack, codeOf, fastRetries, type GiftHarness, startGiftHarness } from "./helpers.ts";

let h: GiftHarness;
let pk: PkApp;
let bus: EventBus;
const key = () => crypto.randomUUID();
const gift = (token: string) => h.client(GiftService, h.gift.server.url, token);
const wallet = (token: string) => h.client(WalletService, h.wallet.server.url, token);
let buyer: ReturnType<typeof gift>;
let hostRoom: string;

beforeAll(async () => {
  h = await startGiftHarness();
  pk = await startPk({ ...h.env.env, PORT: "0", ...fastRetries });
  // The gift service asks PK about battle sides: restart it with PK_URL.
  await h.restartGift({ PK_URL: pk.server.url });
  bus = await EventBus.connect({
    url: h.env.natsUrl,
    prefix: h.env.prefix,
    name: "boost-test",
    streamMaxBytes: testStreamMaxBytes,
    ...h.env.natsOps,
  });
  const admin = wallet(await h.env.token("root", ["admin"]));
  await admin.mint({ userId: "bob", money: { asset: "COIN", amount: 100_000n }, idempotencyKey: key() });
  buyer = gift(await h.env.token("bob", ["user"]));
  hostRoom = (await gift(await h.env.token("hana", ["user", "host"])).startLive({ title: "boost me" })).room!
    .id;
}, 60_000);
afterAll(async () => {
  await bus?.close();
  await pk?.close();
  await h?.close();
});

const coins = async (userId: string) =>
  (await wallet(await h.env.token("root", ["admin"])).getBalances({ userId })).balances.find(
    (b) => b.asset === "COIN",
  )?.amount ?? 0n;
const entryOf = async (roomId: string) =>
  (await buyer.discover({ pageSize: 100 })).entries.find((e) => e.room?.id === roomId);
const inboxCount = async (app: { orm: GiftApp["orm"] }, consumer: string, eventId: string) =>
  (
    await app.orm.em
      .fork()
      .execute<{ n: number }[]>("select count(*)::int as n from inbox where consumer = ? and event_id = ?", [
        consumer,
        eventId,
      ])
  )[0]!.n;

/** BoostPurchased events in the WALLET stream so far. */
async function boostEventsPublished(): Promise<number> {
  const subject = bus.names.subject("wallet.boost.purchased");
  const info = await bus.jsm.streams.info(bus.names.stream("WALLET"), { subjects_filter: subject });
  return Number(info.state.subjects?.[subject] ?? 0);
}

/** Publishes a BoostPurchased on the WALLET stream as the wallet's relay does. */
async function publishBoost(boost: {
  targetType: (typeof BoostTargetType)[keyof typeof BoostTargetType];
  targetId: string;
  amount: bigint;
  expiresAt: Date;
}): Promise<string> {
  const boostId = crypto.randomUUID();
  const headers = natsHeaders();
  headers.set(headerNames.eventId, boostId);
  headers.set(headerNames.eventType, BoostPurchasedSchema.typeName);
  const message = create(BoostPurchasedSchema, {
    boostId,
    buyerId: "bob",
    targetType: boost.targetType,
    targetId: boost.targetId,
    money: { asset: "COIN", amount: boost.amount },
    durationHours: 1,
    startTime: timestampFromDate(new Date()),
    expireTime: timestampFromDate(boost.expiresAt),
  });
  await bus.js.publish(bus.names.subject("wallet.boost.purchased"), toBinary(BoostPurchasedSchema, message), {
    msgID: boostId,
    headers,
  });
  return boostId;
}

describe("buying a boost", () => {
  it("refuses bad input, unknown targets and what the buyer cannot pay, and changes nothing", async () => {
    const before = await coins("bob");
    const base = { targetType: BoostTargetType.HOST, targetId: "hana", amount: 100n, durationHours: 24 };
    const attempts = [
      [{ ...base, amount: 9n }, "InvalidArgument"],
      [{ ...base, amount: 1_000_001n }, "InvalidArgument"],
      [{ ...base, durationHours: 0 }, "InvalidArgument"],
      [{ ...base, durationHours: 73 }, "InvalidArgument"],
      [{ ...base, targetType: BoostTargetType.UNSPECIFIED }, "InvalidArgument"],
      [{ ...base, targetId: "" }, "InvalidArgument"],
      [{ ...base, targetId: "nobody" }, "NotFound"],
      [{ ...base, targetType: BoostTargetType.ROOM, targetId: "not-a-room" }, "InvalidArgument"],
      [{ ...base, targetType: BoostTargetType.ROOM, targetId: crypto.randomUUID() }, "NotFound"],
      [{ ...base, targetType: BoostTargetType.PK_SIDE, targetId: "battle:C" }, "InvalidArgument"],
      [{ ...base, targetType: BoostTargetType.PK_SIDE, targetId: `${crypto.randomUUID()}:A` }, "NotFound"],
      [{ ...base, amount: 1_000_000n }, "FailedPrecondition"], // more than bob has
    ] as const;
    for (const [request, code] of attempts)
      expect(
        await codeOf(buyer.purchaseBoost({ ...request, idempotencyKey: key() })),
        JSON.stringify(request, (_k, v) => (typeof v === "bigint" ? String(v) : v)),
      ).toBe(code);
    expect(await coins("bob")).toBe(before);
  });

  it("pays at most once under a key, even when a retry runs while the first hears its refusal", async () => {
    const kaiRoom = (await gift(await h.env.token("kai", ["user", "host"])).startLive({ title: "" })).room!;
    const command = {
      buyerId: "ray",
      targetType: BoostTargetType.ROOM,
      targetId: kaiRoom.id,
      amount: 100n,
      durationHours: 1,
      idempotencyKey: key(),
      consentToken: await h.env.token("ray", ["user"]),
    };
    const { boosts } = h.gift;
    const late = answerHeldBack(boosts.payments);
    // ray has no coins: the first purchase is refused, and hears it late.
    const first = purchaseBoost({ ...boosts, payments: late.payments }, command).catch(
      (error: unknown) => error,
    );
    await late.firstAnswered;
    await wallet(await h.env.token("root", ["admin"])).mint({
      userId: "ray",
      money: { asset: "COIN", amount: 250n },
      idempotencyKey: key(),
    });
    const second = await purchaseBoost(boosts, command);
    late.letGo();
    expect(await first).toMatchObject({ code: "insufficient_balance" });
    const third = await purchaseBoost(boosts, command);
    expect(third.boost.boostId).toBe(second.boost.boostId);
    expect(await coins("ray")).toBe(150n);
  });

  it("debits once per key, publishes one BoostPurchased that every consumer applies once", async () => {
    const before = await coins("bob");
    const request = {
      targetType: BoostTargetType.ROOM,
      targetId: hostRoom,
      amount: 500n,
      durationHours: 2,
      idempotencyKey: key(),
    };
    const [first, retry] = [await buyer.purchaseBoost(request), await buyer.purchaseBoost(request)];
    expect(retry.boost?.boostId).toBe(first.boost?.boostId);
    expect(first.balance).toBe(before - 500n);
    expect(await coins("bob")).toBe(before - 500n);
    expect(first.boost?.hostIds).toEqual(["hana"]);
    expect(await codeOf(buyer.purchaseBoost({ ...request, amount: 600n }))).toBe("AlreadyExists");

    await waitFor(async () => (await entryOf(hostRoom))?.boost === 500n, {
      what: "the room's boost in discovery",
    });
    const entry = (await entryOf(hostRoom))!;
    expect(entry.score).toBe(entry.activity + 500n);
    const boostId = first.boost!.boostId;
    expect(await inboxCount(h.gift, "gift-discovery", boostId)).toBe(1);
    // PK saw it too (and ignored it: not a PK side), once.
    await waitFor(async () => (await inboxCount(pk, "pk-side-boosts", boostId)) === 1, {
      what: "pk consumer",
    });
  });

  it("counts a room however its id is spelled", async () => {
    const room = (await gift(await h.env.token("caps", ["user", "host"])).startLive({ title: "caps" })).room!
      .id;
    const bought = await buyer.purchaseBoost({
      targetType: BoostTargetType.ROOM,
      targetId: room.toUpperCase(),
      amount: 15n,
      durationHours: 1,
      idempotencyKey: key(),
    });
    expect(bought.boost?.targetId).toBe(room);
    await waitFor(async () => (await entryOf(room))?.boost === 15n, { what: "the boost on the room's row" });
  });

  it("answers a retry with the first purchase even after its room has ended", async () => {
    const ender = gift(await h.env.token("ender", ["user", "host"]));
    const room = (await ender.startLive({ title: "short show" })).room!.id;
    const request = {
      targetType: BoostTargetType.ROOM,
      targetId: room,
      amount: 40n,
      durationHours: 1,
      idempotencyKey: key(),
    };
    const first = await buyer.purchaseBoost(request);
    await ender.endLive({ roomId: room });
    const retry = await buyer.purchaseBoost(request);
    expect(retry.boost?.boostId).toBe(first.boost?.boostId);
    expect(retry.balance).toBe(first.balance);
    expect(await coins("bob")).toBe(first.balance);
    // A new purchase of the ended room is refused.
    expect(await codeOf(buyer.purchaseBoost({ ...request, idempotencyKey: key() }))).toBe(
      "FailedPrecondition",
    );
  });

  it("shows a PK side's boosts on the battle without touching its points", async () => {
    const hosts = ["pa", "pb"];
    for (const hostId of hosts)
      await gift(await h.env.token(hostId, ["user", "host"])).startLive({ title: "pk" });
    const pkAdmin = h.client(PkService, pk.server.url, await h.env.token("root", ["admin"]));
    const battle = await waitFor(
      async () =>
        pkAdmin
          .createBattle({
            mode: BattleMode.SOLO,
            sideA: ["pa"],
            sideB: ["pb"],
            durationSeconds: 60,
            tiePolicy: TiePolicy.DRAW,
            idempotencyKey: "boost-battle",
          })
          .then((r) => r.battle)
          .catch(() => undefined),
      { what: "PK to know both hosts are live" },
    );
    const bought = await buyer.purchaseBoost({
      targetType: BoostTargetType.PK_SIDE,
      targetId: `${battle!.id}:B`,
      amount: 300n,
      durationHours: 1,
      idempotencyKey: key(),
    });
    expect(bought.boost?.hostIds).toEqual(["pb"]);
    await buyer.purchaseBoost({
      targetType: BoostTargetType.PK_SIDE,
      targetId: `${battle!.id}:b`,
      amount: 200n,
      durationHours: 1,
      idempotencyKey: key(),
    });
    await waitFor(
      async () => (await pkAdmin.getBattle({ battleId: battle!.id })).battle?.sides[1]?.boostCoins === 500n,
      { what: "side B's boosts" },
    );
    const sides = (await pkAdmin.getBattle({ battleId: battle!.id })).battle!.sides;
    expect(sides.map((s) => [s.boostCoins, s.boosts, s.points])).toEqual([
      [0n, 0, 0n],
      [500n, 2, 0n],
    ]);

    // PK's consumer down during a purchase: it catches up when it starts again.
    const sideBoosts = pk.consumers.get("pk-side-boosts")!;
    await sideBoosts.stop();
    await buyer.purchaseBoost({
      targetType: BoostTargetType.PK_SIDE,
      targetId: `${battle!.id}:A`,
      amount: 70n,
      durationHours: 1,
      idempotencyKey: key(),
    });
    await sideBoosts.start();
    await waitFor(
      async () => (await pkAdmin.getBattle({ battleId: battle!.id })).battle?.sides[0]?.boostCoins === 70n,
      { what: "side A's boost after the catch-up" },
    );
  });

  it("a discovery consumer that was down during the purchase catches up when it starts again", async () => {
    await h.gift.consumers.get("gift-discovery")!.stop();
    const { boost } = await buyer.purchaseBoost({
      targetType: BoostTargetType.HOST,
      targetId: "hana",
      amount: 250n,
      durationHours: 1,
      idempotencyKey: key(),
    });
    const before = (await entryOf(hostRoom))!.boost;
    await h.gift.consumers.get("gift-discovery")!.start();
    await waitFor(async () => (await entryOf(hostRoom))?.boost === before + 250n, { what: "the catch-up" });
    expect(await inboxCount(h.gift, "gift-discovery", boost!.boostId)).toBe(1);
  });
});

describe("faults", () => {
  it("a purchase whose payment reply is lost answers UNAVAILABLE; its retry pays once and publishes once", async () => {
    await using proxy = await FaultProxy.start(h.wallet.server.url);
    const faulty = await startGift({
      ...h.env.env,
      PORT: "0",
      WALLET_URL: proxy.url(h.wallet.server.url),
      ...fastRetries,
    });
    try {
      const client = h.client(GiftService, faulty.server.url, await h.env.token("bob", ["user"]));
      const before = await coins("bob");
      const published = await boostEventsPublished();
      const request = {
        targetType: BoostTargetType.ROOM,
        targetId: hostRoom,
        amount: 123n,
        durationHours: 1,
        idempotencyKey: key(),
      };
      // The wallet commits, and its answer is lost on the way back.
      proxy.delay(400);
      const first = client.purchaseBoost(request).then(
        () => "answered",
        (error) => ConnectError.from(error).code,
      );
      await waitFor(async () => (await coins("bob")) === before - 123n, { what: "the debit to commit" });
      proxy.reset();
      expect(await first).toBe(Code.Unavailable);
      proxy.delay(0);
      const retried = await client.purchaseBoost(request);
      expect(retried.balance).toBe(before - 123n);
      expect(await coins("bob")).toBe(before - 123n);
      await waitFor(async () => (await boostEventsPublished()) === published + 1, { what: "its one event" });
      const again = await client.purchaseBoost(request);
      expect(again.boost?.boostId).toBe(retried.boost?.boostId);
      // Once the wallet's outbox is empty, everything it committed is in the stream.
      await waitFor(async () => (await h.wallet.orm.em.fork().execute("select 1 from outbox")).length === 0, {
        what: "the wallet's outbox to drain",
      });
      expect(await boostEventsPublished()).toBe(published + 1);
    } finally {
      await faulty.close();
    }
  });
});

describe("expiry", () => {
  it("takes a boost out of the ranking at its expiry time, also when the service restarted meanwhile", async () => {
    const room = (await gift(await h.env.token("exp", ["user", "host"])).startLive({ title: "short" })).room!
      .id;
    const soon = new Date(Date.now() + 2_000);
    await publishBoost({ targetType: BoostTargetType.ROOM, targetId: room, amount: 77n, expiresAt: soon });
    await waitFor(async () => (await entryOf(room))?.boost === 77n, { what: "the boost applied" });
    expect(Date.now()).toBeLessThan(soon.getTime());
    await waitFor(async () => (await entryOf(room))?.boost === 0n, { timeoutMs: 5_000, what: "expiry" });
    const lateness = Date.now() - soon.getTime();
    expect(lateness).toBeGreaterThanOrEqual(0);
    // Timers are polled every 250 ms; the bound leaves room for a loaded machine.
    expect(lateness).toBeLessThan(3_000);

    // A boost whose timer comes due while the gift service is down expires when it is back.
    const later = new Date(Date.now() + 2_500);
    await publishBoost({ targetType: BoostTargetType.ROOM, targetId: room, amount: 88n, expiresAt: later });
    await waitFor(async () => (await entryOf(room))?.boost === 88n, { what: "the second boost applied" });
    await h.restartGift({ PK_URL: pk.server.url }, () =>
      waitFor(async () => Date.now() > later.getTime() + 500, { what: "the expiry time to pass" }),
    );
    await waitFor(async () => (await entryOf(room))?.boost === 0n, {
      timeoutMs: 5_000,
      what: "expiry after restart",
    });
  });
});

describe("replicas", () => {
  it("two gift replicas apply a boost once and expire it once", async () => {
    const second = await startGift({
      ...h.env.env,
      PORT: "0",
      WALLET_URL: h.wallet.server.url,
      ...fastRetries,
    });
    try {
      const room = (await gift(await h.env.token("twin", ["user", "host"])).startLive({ title: "twins" }))
        .room!.id;
      const soon = new Date(Date.now() + 1_500);
      const short = await publishBoost({
        targetType: BoostTargetType.ROOM,
        targetId: room,
        amount: 50n,
        expiresAt: soon,
      });
      await publishBoost({
        targetType: BoostTargetType.ROOM,
        targetId: room,
        amount: 100n,
        expiresAt: new Date(Date.now() + 3_600_000),
      });
      await waitFor(async () => (await entryOf(room))?.boost === 150n, { what: "both boosts, once each" });
      // Both replicas run timers; the short boost's coins come off exactly once.
      await waitFor(async () => (await entryOf(room))?.boost === 100n, {
        timeoutMs: 5_000,
        what: "the expiry",
      });
      // Its timer is done (a finished job is deleted), so nothing can take the coins off again.
      await waitFor(
        async () =>
          (
            await h.gift.orm.em
              .fork()
              .execute("select 1 from ovation_jobs.jobs where key = ?", [`gift:boost:${short}`])
          ).length === 0,
        { what: "the timer to finish" },
      );
      expect((await entryOf(room))?.boost).toBe(100n);
    } finally {
      await second.close();
    }
  });
});

describe("replay", () => {
  it("rebuilds the ranking exactly from the stream while new boosts arrive", async () => {
    const rooms: string[] = [];
    for (let i = 0; i < 4; i++)
      rooms.push(
        (await gift(await h.env.token(`r${i}`, ["user", "host"])).startLive({ title: `r${i}` })).room!.id,
      );
    const hour = new Date(Date.now() + 3_600_000);
    for (let i = 0; i < 200; i++)
      await publishBoost({
        targetType: BoostTargetType.ROOM,
        targetId: rooms[i % 4]!,
        amount: BigInt(10 + i),
        expiresAt: hour,
      });
    // Some already over when they arrive: recorded, never counted.
    for (let i = 0; i < 5; i++)
      await publishBoost({
        targetType: BoostTargetType.ROOM,
        targetId: rooms[0]!,
        amount: 1_000n,
        expiresAt: new Date(Date.now() - 1_000),
      });
    const snapshot = async () => {
      const em = h.gift.orm.em.fork();
      return {
        boosts: await em.execute(
          "select boost_id, target_type, target_id, amount::text, expires_at, expired from discovery_boosts order by boost_id",
        ),
        scores: await em.execute(
          "select target_type, target_id, boost::text from discovery_scores order by target_type, target_id",
        ),
        ranking: (await buyer.discover({ pageSize: 100 })).entries.map((e) => [e.room?.id, e.score]),
      };
    };
    const expected = (n: number) => {
      // room i gets boosts i, i+4, …: amounts 10 + index.
      const sums = [0n, 0n, 0n, 0n];
      for (let i = 0; i < n; i++) sums[i % 4]! += BigInt(10 + i);
      return sums;
    };
    await waitFor(async () => (await entryOf(rooms[3]!))?.boost === expected(200)[3], {
      what: "live projection",
    });
    const live = await snapshot();
    // A projection gone wrong (a bug, a hand edit): the replay must not depend on it.
    await h.gift.orm.em.fork().execute("update discovery_scores set boost = boost * 2");

    const arriving = (async () => {
      for (let i = 200; i < 300; i++)
        await publishBoost({
          targetType: BoostTargetType.ROOM,
          targetId: rooms[i % 4]!,
          amount: BigInt(10 + i),
          expiresAt: hour,
        });
    })();
    const result = await replayProjection(discoveryConsumer(h.gift.discovery), {
      bus,
      orm: h.gift.orm,
      logger: h.gift.logger,
      schema: "gift",
    });
    await arriving;
    expect(result.events).toBeGreaterThanOrEqual(205);
    await waitFor(async () => (await entryOf(rooms[3]!))?.boost === expected(300)[3], {
      what: "events after the swap",
    });
    const sums = expected(300);
    for (const [i, roomId] of rooms.entries()) expect((await entryOf(roomId))?.boost).toBe(sums[i]);
    // Every boost exactly once, the expired ones recorded as such.
    const rebuilt = await snapshot();
    const ours = (rebuilt.boosts as { target_id: string; expired: boolean }[]).filter((b) =>
      rooms.includes(b.target_id),
    );
    expect(ours.length).toBe(305);
    expect(ours.filter((b) => b.expired).length).toBe(5);
    // What the live consumer had built before the replay is still there, unchanged.
    for (const row of live.boosts) expect(rebuilt.boosts).toContainEqual(row);
    // The live consumer skips what the replay applied: nothing counted twice.
    // And a second replay, from scratch, gives exactly what the live consumer built since:
    // through the operator's command this time (`./ov replay gift-discovery`).
    const cli = resolve(import.meta.dirname, "../src/cli.ts");
    const replayed = spawnSync(process.execPath, [cli, "replay", "gift-discovery"], {
      env: { ...process.env, ...h.env.env },
      encoding: "utf8",
    });
    expect(replayed.status, replayed.stderr).toBe(0);
    expect(replayed.stdout).toMatch(/replayed \d+ events of WALLET into gift-discovery .* swapped in/);
    expect(await snapshot()).toEqual(rebuilt);
    const unknown = spawnSync(process.execPath, [cli, "replay", "gift-nothing"], {
      env: { ...process.env, ...h.env.env },
      encoding: "utf8",
    });
    expect([unknown.status, unknown.stderr]).toEqual([
      2,
      expect.stringContaining("no replayable consumer gift-nothing"),
    ]);
  });
});
