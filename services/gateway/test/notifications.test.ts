// Notifications against real Postgres and NATS: a boost becomes exactly one notification per
// host however often it is delivered or published, it is pushed live on the user channel
// once per socket by every replica (though one replica's consumer stored it), the LISTEN
// connection comes back after it is killed, a gateway that was down catches up when it starts,
// credit events notify purchases and promotion credits but not spending, and the listing is
// the caller's own, newest first, in pages, refusing bad input.
import { randomUUID } from "node:crypto";
import { create, type DescMessage, fromBinary, type MessageShape, toBinary } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { headers as natsHeaders } from "@nats-io/nats-core";
import { EventBus, headerNames } from "@ovation/events";
import { MoneySchema } from "@ovation/proto/gen/ovation/type/v1/money_pb.ts";
import {
  BoostPurchasedSchema,
  BoostTargetType,
  CreditEventKind,
  CreditEventSchema,
  TransferCommittedSchema,
} from "@ovation/proto/gen/ovation/wallet/v1/events_pb.ts";
import { TransferKind } from "@ovation/proto/gen/ovation/wallet/v1/wallet_pb.ts";
import { waitFor } from "@ovation/testkit";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Gateway } from "../src/main.ts";
import { listenerApplicationName } from "../src/ws/notification-listener.ts";
import {
  call,
  type GatewayHarness,
  type Json,
  openSocket,
  type SocketClient,
  startGatewayHarness,
} from "./helpers.ts";

const consumers = { boost: "gateway-boost-notifications", credit: "gateway-credit-notifications" } as const;

let h: GatewayHarness;
let database: pg.Pool;
/** The operator's view of the bus, for looking at the gateway's consumers. */
let ops: EventBus;
const tokens = new Map<string, string>();

beforeAll(async () => {
  h = await startGatewayHarness({ DATABASE_POOL_MAX: "4" });
  database = new pg.Pool({ connectionString: h.env.databaseUrl, max: 2 });
  ops = await EventBus.connect({
    url: h.env.natsUrl,
    prefix: h.env.prefix,
    name: "observer",
    ...h.env.natsOps,
  });
});

afterAll(async () => {
  await ops?.close();
  await database?.end();
  await h?.close();
});

async function token(user: string): Promise<string> {
  let value = tokens.get(user);
  if (value === undefined) {
    value = await h.env.token(user, ["user", "host"]);
    tokens.set(user, value);
  }
  return value;
}

/** Publishes an event the way the wallet's relay does; returns its stream sequence. */
async function publish<Desc extends DescMessage>(
  schema: Desc,
  subject: string,
  message: MessageShape<Desc>,
  eventId: string = randomUUID(),
  messageId: string = eventId,
): Promise<number> {
  const bus = h.wallet.bus;
  const headers = natsHeaders();
  headers.set(headerNames.eventId, eventId);
  headers.set(headerNames.eventType, schema.typeName);
  const ack = await bus.js.publish(bus.names.subject(subject), toBinary(schema, message), {
    msgID: messageId,
    headers,
  });
  return ack.seq;
}

function boost(
  buyer: string,
  hosts: string[],
  targetType: BoostTargetType = BoostTargetType.HOST,
  at = new Date(),
) {
  return create(BoostPurchasedSchema, {
    boostId: randomUUID(),
    buyerId: buyer,
    targetType,
    targetId: hosts[0] ?? "",
    hostIds: hosts,
    money: create(MoneySchema, { asset: "COIN", amount: 500n }),
    durationHours: 24,
    startTime: timestampFromDate(at),
    expireTime: timestampFromDate(new Date(at.getTime() + 24 * 3600_000)),
  });
}

async function publishBoost(event: MessageShape<typeof BoostPurchasedSchema>): Promise<number> {
  return publish(BoostPurchasedSchema, "wallet.boost.purchased", event, event.boostId);
}

async function publishCredit(
  user: string,
  kind: CreditEventKind,
  reason: TransferKind,
  at: Date,
  amount = 500n,
) {
  const subjects: Record<number, string> = {
    [CreditEventKind.PURCHASED]: "purchased",
    [CreditEventKind.SPENT]: "spent",
    [CreditEventKind.EARNED]: "earned",
  };
  const subject = subjects[kind];
  const event = create(CreditEventSchema, {
    kind,
    userId: user,
    money: create(MoneySchema, { asset: "COIN", amount }),
    reason,
    transferId: randomUUID(),
    reference: "test",
    time: timestampFromDate(at),
  });
  // As the wallet publishes it: the transfer's one event, carrying its credit.
  return publish(
    TransferCommittedSchema,
    `wallet.transfer.credit.${subject}`,
    create(TransferCommittedSchema, { credit: event }),
  );
}

/** Waits until `consumer` acknowledged every message up to stream sequence `sequence`. */
async function processedThrough(consumer: string, sequence: number): Promise<void> {
  await waitFor(
    async () =>
      (await ops.jsm.consumers.info(ops.names.stream("WALLET"), consumer)).ack_floor.stream_seq >= sequence,
    { what: `${consumer} through ${sequence}` },
  );
}

async function list(gateway: Gateway, user: string, query = ""): Promise<Json> {
  const reply = await call(gateway.url, "GET", `/api/notifications${query}`, { token: await token(user) });
  expect(reply.status, JSON.stringify(reply.body)).toBe(200);
  return reply.body;
}

async function rows(boostId: string): Promise<{ user_id: string; n: number }[]> {
  const result = await database.query<{ user_id: string; n: number }>(
    `select user_id, count(*)::int as n from gateway.notifications where data ->> 'boostId' = $1
     group by user_id order by user_id`,
    [boostId],
  );
  return result.rows;
}

async function userSocket(gateway: Gateway, user: string): Promise<SocketClient> {
  const client = await openSocket(gateway.url, { token: await token(user) });
  await client.next((m) => m.type === "authenticated");
  client.send({ op: "subscribe", channel: "user" });
  await client.next((m) => m.type === "subscribed" && m.channel === "user");
  return client;
}

const pushed = (client: SocketClient, id: string) =>
  client.messages.filter((m) => m.channel === "user" && m.type === "notification" && m.id === id);

/** The notification `boostId` became for one host. */
async function notificationOf(boostId: string, host: string): Promise<string> {
  const found = await waitFor(async () => {
    const result = await database.query<{ id: string }>(
      "select id from gateway.notifications where data ->> 'boostId' = $1 and user_id = $2",
      [boostId, host],
    );
    return result.rows[0]?.id;
  });
  return found;
}

describe("boost notifications", () => {
  it("notify each host of a boost once, live on the user channel; redelivery and a second publish change nothing", async () => {
    const socket = await userSocket(h.gateway, "hana");
    const event = boost("alice", ["hana", "hugo", "alice"], BoostTargetType.PK_SIDE);
    await publishBoost(event);
    const message = await socket.next(
      (m) => m.type === "notification" && m.data.data.boostId === event.boostId,
    );
    expect(message).toMatchObject({
      channel: "user",
      type: "notification",
      data: {
        type: "boost.received",
        text: "Your PK side was boosted by alice for 24 hours (500 COIN)",
        data: { buyerId: "alice", targetType: "BOOST_TARGET_TYPE_PK_SIDE", amount: "500", asset: "COIN" },
      },
    });
    expect(message.id).toBe(message.data.id);

    // The same event again under another Nats-Msg-Id (JetStream's dedupe cannot catch it: a
    // redelivery after the duplicate window), then under another event id (a producer that
    // published it twice): the inbox stops the first, the derived notification id the second.
    await publish(BoostPurchasedSchema, "wallet.boost.purchased", event, event.boostId, randomUUID());
    const last = await publish(BoostPurchasedSchema, "wallet.boost.purchased", event, randomUUID());
    await processedThrough(consumers.boost, last);
    expect(await rows(event.boostId)).toEqual([
      { user_id: "hana", n: 1 },
      { user_id: "hugo", n: 1 },
    ]);
    const listed = await list(h.gateway, "hana");
    expect(listed.notifications.filter((n: Json) => n.data.boostId === event.boostId)).toEqual([
      message.data,
    ]);
    expect(pushed(socket, message.id)).toHaveLength(1);
    socket.close();
  });
});

describe("credit notifications", () => {
  it("announce purchases and promotion credits, but not spending or gift income", async () => {
    const user = "vic";
    const start = Date.now() - 60_000;
    const at = (seconds: number) => new Date(start + seconds * 1000);
    await publishCredit(user, CreditEventKind.SPENT, TransferKind.SPEND, at(1));
    await publishCredit(user, CreditEventKind.EARNED, TransferKind.EARN, at(2));
    await publishCredit(user, CreditEventKind.PURCHASED, TransferKind.PURCHASE, at(3), 1_000n);
    const last = await publishCredit(user, CreditEventKind.EARNED, TransferKind.PROMOTION, at(4), 50n);
    // The later events that do notify have arrived, and every earlier one was acknowledged.
    await waitFor(async () => (await list(h.gateway, user)).notifications.length >= 2);
    await processedThrough(consumers.credit, last);
    const listed = await list(h.gateway, user);
    expect(listed.notifications.map((n: Json) => [n.type, n.text, n.createTime])).toEqual([
      ["credit.earned", "50 COIN promotion credit landed in your wallet", at(4).toISOString()],
      ["credit.purchased", "1000 COIN landed in your wallet", at(3).toISOString()],
    ]);
    expect(listed.nextPageToken).toBe("");
  });
});

describe("GET /api/notifications", () => {
  it("lists the caller's own, newest first, a page at a time", async () => {
    const start = Date.now() - 3_600_000;
    const events = [0, 1, 2].map((i) =>
      boost("bob", ["pia"], BoostTargetType.ROOM, new Date(start + i * 1000)),
    );
    for (const event of events) await publishBoost(event);
    await publishBoost(boost("bob", ["quinn"]));
    await waitFor(async () => (await list(h.gateway, "pia")).notifications.length === 3);

    const first = await list(h.gateway, "pia", "?pageSize=2");
    expect(first.notifications.map((n: Json) => n.data.boostId)).toEqual([
      events[2]!.boostId,
      events[1]!.boostId,
    ]);
    expect(first.notifications[0]).toMatchObject({
      type: "boost.received",
      text: "Your live room was boosted by bob for 24 hours (500 COIN)",
      createTime: new Date(start + 2000).toISOString(),
    });
    expect(first.nextPageToken).not.toBe("");
    const second = await list(h.gateway, "pia", `?pageSize=2&pageToken=${first.nextPageToken}`);
    expect(second.notifications.map((n: Json) => n.data.boostId)).toEqual([events[0]!.boostId]);
    expect(second.nextPageToken).toBe("");
    expect((await list(h.gateway, "nobody")).notifications).toEqual([]);
  });

  it("refuses bad input with 400, no token with 401, a service token with 403", async () => {
    const userToken = await token("pia");
    for (const query of [
      "?pageToken=bm90LWEtY3Vyc29y",
      "?pageToken=%2F%2F%2F",
      "?pageSize=101",
      "?pageSize=-1",
      "?pageSize=0x10",
      "?pageSize=1&pageSize=2",
      "?userId=hana",
    ]) {
      const reply = await call(h.gateway.url, "GET", `/api/notifications${query}`, { token: userToken });
      expect([query, reply.status, reply.body.code]).toEqual([query, 400, "invalid_argument"]);
    }
    expect((await call(h.gateway.url, "GET", "/api/notifications")).status).toBe(401);
    const service = await h.env.serviceToken("gift");
    expect((await call(h.gateway.url, "GET", "/api/notifications", { token: service })).status).toBe(403);
    const post = await call(h.gateway.url, "POST", "/api/notifications", { token: userToken, body: {} });
    expect([post.status, post.headers.get("allow")]).toEqual([405, "GET"]);
  });

  it("is in the OpenAPI document", async () => {
    const document = (await call(h.gateway.url, "GET", "/api/openapi.json")).body;
    expect(document.paths["/api/notifications"].get.operationId).toBe("listNotifications");
  });
});

describe("from the real producers", () => {
  it("a mint tells the user the coins landed; a boost bought over REST tells the host, not the paying buyer", async () => {
    const admin = await h.env.token("root", ["admin"]);
    const host = await userSocket(h.gateway, "hal");
    const live = await call(h.gateway.url, "POST", "/api/rooms", { token: await token("hal"), body: {} });
    expect(live.status).toBe(200);
    const minted = await call(h.gateway.url, "POST", "/api/admin/wallet/mint", {
      token: admin,
      body: { userId: "eve", money: { asset: "COIN", amount: "1000" }, idempotencyKey: randomUUID() },
    });
    expect(minted.status).toBe(200);
    const bought = await call(h.gateway.url, "POST", "/api/boosts", {
      token: await token("eve"),
      body: {
        targetType: "BOOST_TARGET_TYPE_HOST",
        targetId: "hal",
        amount: "500",
        durationHours: 24,
        idempotencyKey: randomUUID(),
      },
    });
    expect(bought.status, JSON.stringify(bought.body)).toBe(200);
    const message = await host.next((m) => m.type === "notification" && m.data.type === "boost.received");
    expect(message.data).toMatchObject({
      text: "Your profile was boosted by eve for 24 hours (500 COIN)",
      data: { boostId: bought.body.boost.boostId, buyerId: "eve", targetId: "hal" },
    });
    expect((await list(h.gateway, "hal")).notifications).toEqual([message.data]);
    // The buyer's list is final once the boost's payment (SPENT, published by the wallet with
    // the boost) is acknowledged and the mint's notice has arrived.
    const bus = h.wallet.bus;
    const spent = await waitFor(async () => {
      const stored = await bus.jsm.streams.getMessage(bus.names.stream("WALLET"), {
        last_by_subj: bus.names.subject("wallet.transfer.credit.spent"),
      });
      return (
        stored !== null &&
        fromBinary(TransferCommittedSchema, stored.data).credit?.userId === "eve" &&
        stored.seq
      );
    });
    await processedThrough(consumers.credit, spent);
    await waitFor(async () => (await list(h.gateway, "eve")).notifications.length > 0);
    const buyer = await list(h.gateway, "eve");
    expect(buyer.notifications.map((n: Json) => [n.type, n.text])).toEqual([
      ["credit.purchased", "1000 COIN landed in your wallet"],
    ]);
    host.close();
  });
});

describe("replicas", () => {
  let second: Gateway;

  beforeAll(async () => {
    second = await h.extraGateway({ DATABASE_POOL_MAX: "4" });
  });

  it("store one row and push it once to each socket of the user on every replica", async () => {
    const sockets = [
      await userSocket(h.gateway, "hugo"),
      await userSocket(h.gateway, "hugo"),
      await userSocket(second, "hugo"),
      await userSocket(second, "hugo"),
    ];
    const event = boost("zoe", ["hugo"]);
    await publishBoost(event);
    const id = await notificationOf(event.boostId, "hugo");
    for (const socket of sockets) await socket.next((m) => m.type === "notification" && m.id === id);
    // A later notification reaches every socket after it: a second copy of the first, from a
    // listener twice on one replica, would have arrived before it.
    const marker = boost("zoe", ["hugo"]);
    await publishBoost(marker);
    const markerId = await notificationOf(marker.boostId, "hugo");
    for (const socket of sockets) await socket.next((m) => m.type === "notification" && m.id === markerId);
    expect(await rows(event.boostId)).toEqual([{ user_id: "hugo", n: 1 }]);
    for (const socket of sockets) expect(pushed(socket, id)).toHaveLength(1);
    for (const socket of sockets) socket.close();
  });

  it("listen again after their LISTEN connection is killed", async () => {
    const sockets = [await userSocket(h.gateway, "hana"), await userSocket(second, "hana")];
    const listeners = async () =>
      (
        await database.query<{ pid: number }>(
          "select pid from pg_stat_activity where datname = current_database() and application_name = $1",
          [listenerApplicationName],
        )
      ).rows.map((row) => row.pid);
    // Both replicas run in this test's process: they share its one LISTEN connection (0043).
    const before = await listeners();
    expect(before).toHaveLength(1);
    await database.query("select pg_terminate_backend(pid) from unnest($1::int[]) as pid", [before]);
    await waitFor(async () => {
      const now = await listeners();
      return now.length === 1 && now.every((pid) => !before.includes(pid));
    });
    const event = boost("alice", ["hana"]);
    await publishBoost(event);
    const id = await notificationOf(event.boostId, "hana");
    for (const socket of sockets) await socket.next((m) => m.type === "notification" && m.id === id);
    for (const socket of sockets) socket.close();
  });

  it("catch up on what was published while every gateway was down", async () => {
    await h.gateway.close();
    await second.close();
    const event = boost("alice", ["hana"]);
    const sequence = await publishBoost(event);
    const credit = await publishCredit("vic", CreditEventKind.EARNED, TransferKind.REFUND, new Date());
    const restarted = await h.extraGateway({ DATABASE_POOL_MAX: "4" });
    await processedThrough(consumers.boost, sequence);
    await processedThrough(consumers.credit, credit);
    const listed = await list(restarted, "hana");
    expect(listed.notifications.filter((n: Json) => n.data.boostId === event.boostId)).toHaveLength(1);
    expect((await list(restarted, "vic")).notifications[0]).toMatchObject({
      type: "credit.earned",
      text: "500 COIN refunded to your wallet",
    });
  });
});
