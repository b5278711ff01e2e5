// Proves the bus permissions against a real nats-server running the rendered configuration
// (decision 0021): nobody connects anonymously; a service publishes only its own domain's
// subjects (gift may not publish GiftSent, which only the wallet publishes after the debit, nor
// order.order.completed, which would mint coins); the gateway publishes no event at all; no
// service updates another's stream or creates, pulls from or deletes another's durable consumer;
// no identity reads another's inbox; only the DLQ admin asks consumers to replay. A refusal
// surfaces as an error at once (nats.js maps the server's -ERR to the request), never as a
// silent timeout, and nothing reaches the stream.
import { create, toBinary } from "@bufbuild/protobuf";
import { AckPolicy } from "@nats-io/jetstream";
import { errors, type NatsConnection, headers as natsHeaders } from "@nats-io/nats-core";
import { connect } from "@nats-io/transport-node";
import type { Database } from "@ovation/db";
import { MoneySchema } from "@ovation/proto/gen/ovation/type/v1/money_pb.ts";
import { type TestEnvironment, testEnvironment, testStreamMaxBytes } from "@ovation/testkit";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type BusIdentity,
  busGrants,
  busIdentities,
  busPermissions,
  ConsumerRunner,
  EventBus,
  headerNames,
  renderNatsServerConfig,
  subscribeEphemeral,
} from "../src/index.ts";

let env: TestEnvironment;
let ops: EventBus;
const buses = new Map<BusIdentity, EventBus>();

/** A bus connected as `identity`, with its nkey and inbox prefix (one per identity, reused). */
async function busOf(identity: BusIdentity): Promise<EventBus> {
  let bus = buses.get(identity);
  if (bus === undefined) {
    bus = await EventBus.connect({
      url: env.natsUrl,
      prefix: env.prefix,
      name: `permissions-${identity}`,
      streamMaxBytes: testStreamMaxBytes,
      ...env.natsCredentials(identity),
    });
    buses.set(identity, bus);
  }
  return bus;
}

beforeAll(async () => {
  env = await testEnvironment();
  ops = await busOf("ops");
  await ops.ensureStreams();
});

afterAll(async () => {
  for (const bus of buses.values()) await bus.close();
  await env?.[Symbol.asyncDispose]();
});

/** The error a refused call ends with; fails the test if it succeeds or merely times out. */
async function refusal(call: Promise<unknown>): Promise<Error> {
  const started = performance.now();
  const outcome = await call.then(
    () => undefined,
    (error: unknown) => error as Error,
  );
  if (outcome === undefined) throw new Error("the call was allowed");
  // Refused by the server's permissions, answered at once: not a timeout in disguise.
  expect(permissionViolation(outcome), String(outcome)).toBe(true);
  expect(performance.now() - started).toBeLessThan(2_000);
  return outcome;
}

function permissionViolation(error: unknown): boolean {
  for (let link = error, depth = 0; link instanceof Error && depth < 8; depth++) {
    if (link instanceof errors.PermissionViolationError) return true;
    link = link.cause;
  }
  return false;
}

/** Publishes an event as the outbox relay does (JetStream publish, event id header). */
async function publishEvent(bus: EventBus, subject: string) {
  const headers = natsHeaders();
  const eventId = crypto.randomUUID();
  headers.set(headerNames.eventId, eventId);
  return bus.js.publish(
    bus.names.subject(subject),
    toBinary(MoneySchema, create(MoneySchema, { asset: "COIN", amount: 1n })),
    { msgID: eventId, headers },
  );
}

/** Messages stored on `subject` in `stream`, read as ops. */
async function stored(stream: string, subject: string): Promise<number> {
  const full = ops.names.subject(subject);
  const info = await ops.jsm.streams.info(ops.names.stream(stream), { subjects_filter: full });
  return Number(info.state.subjects?.[full] ?? 0);
}

/** Subscribes as `connection` and reports whether the server refused the subscription. */
function subscriptionRefused(connection: NatsConnection, subject: string): Promise<boolean> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), 1_500);
    connection.subscribe(subject, {
      callback: (error) => {
        if (error !== null) {
          clearTimeout(timer);
          resolve(permissionViolation(error));
        }
      },
    });
    void connection.flush();
  });
}

describe("identities", () => {
  it("refuses an anonymous connection, and a key the server does not know", async () => {
    const anonymous = await connect({ servers: env.natsUrl, maxReconnectAttempts: 0 }).then(
      async (connection) => {
        await connection.close();
        return undefined;
      },
      (error: unknown) => error,
    );
    expect(anonymous).toBeInstanceOf(errors.AuthorizationError);
    const { nkeys } = await import("@nats-io/nats-core");
    const stranger = await EventBus.connect({
      url: env.natsUrl,
      prefix: env.prefix,
      name: "stranger",
      identity: "wallet",
      nkeySeed: nkeys.createUser().getSeed(),
    }).catch((error: unknown) => error);
    expect(String(stranger)).toContain(
      "refused the nkey of wallet: the server was configured with another key set",
    );
    expect((stranger as Error).cause).toBeInstanceOf(errors.AuthorizationError);
  });

  it("renders every identity of the table, and refuses an unknown identity or a malformed key", () => {
    expect(busIdentities).toEqual([...Object.keys(busGrants), "ops"]);
    const options = { prefix: "p", host: "127.0.0.1", port: 4222, storeDirectory: "/data" };
    expect(() =>
      renderNatsServerConfig({ ...options, publicKeys: new Map([["card", `U${"A".repeat(55)}`]]) }),
    ).toThrow("no bus permissions for identity card");
    expect(() => renderNatsServerConfig({ ...options, publicKeys: new Map([["gift", "SUAXYZ"]]) })).toThrow(
      "not a public user nkey",
    );
  });
});

describe("publishing", () => {
  it("refuses gift's publish of order.order.completed at once, and nothing reaches ORDER", async () => {
    const gift = await busOf("gift");
    await refusal(publishEvent(gift, "order.order.completed"));
    expect(await stored("ORDER", "order.order.completed")).toBe(0);
    // Its own subjects go through.
    expect((await publishEvent(gift, "gift.room.started")).duplicate).toBe(false);
  });

  it("lets the wallet publish gift.gift.sent, and not gift itself", async () => {
    const wallet = await busOf("wallet");
    await publishEvent(wallet, "gift.gift.sent");
    await refusal(publishEvent(await busOf("gift"), "gift.gift.sent"));
    expect(await stored("GIFT", "gift.gift.sent")).toBe(1);
  });

  it("lets each service publish its own domain only, and the gateway nothing", async () => {
    const domains = ["wallet", "gift", "pk", "discount", "order"] as const;
    for (const identity of [...domains, "gateway"] as const) {
      const bus = await busOf(identity);
      for (const domain of domains) {
        const subject = `${domain}.test.published`;
        if (domain === identity) await publishEvent(bus, subject);
        else await refusal(publishEvent(bus, subject));
      }
    }
    for (const domain of domains)
      expect(await stored(domain.toUpperCase(), `${domain}.test.published`)).toBe(1);
  });

  it("lets only the DLQ admin ask a consumer to replay", async () => {
    for (const identity of ["gift", "gateway", "order"] as const) {
      const bus = await busOf(identity);
      await refusal(bus.connection.request(bus.names.dlqReplaySubject("wallet-host-credit"), "{}"));
    }
    // The wallet may ask; nobody answers here.
    const wallet = await busOf("wallet");
    const unanswered = await wallet.connection
      .request(wallet.names.dlqReplaySubject("wallet-host-credit"), "{}")
      .catch((error: unknown) => error);
    expect(unanswered instanceof errors.RequestError && unanswered.isNoResponders()).toBe(true);
  });
});

describe("streams and consumers", () => {
  it("refuses updating another's stream; ensureStreams leaves streams it does not own as they are", async () => {
    const gift = await busOf("gift");
    const order = ops.names.stream("ORDER");
    const config = (await ops.jsm.streams.info(order)).config;
    await refusal(gift.jsm.streams.update(order, { ...config, max_msgs: 5 }));
    await refusal((await busOf("gateway")).jsm.streams.update(ops.names.stream("WALLET"), { max_msgs: 5 }));
    // GIFT's byte limit differs from what PK's settings say; PK, which reads GIFT, starts and
    // changes nothing.
    const giftStream = ops.names.stream("GIFT");
    await ops.jsm.streams.update(giftStream, { max_bytes: 2 * testStreamMaxBytes });
    await (await busOf("pk")).ensureStreams();
    expect((await ops.jsm.streams.info(giftStream)).config.max_bytes).toBe(2 * testStreamMaxBytes);
    // Its owner puts its own configuration back.
    await gift.ensureStreams();
    expect((await ops.jsm.streams.info(giftStream)).config.max_bytes).toBe(testStreamMaxBytes);
  });

  it("refuses creating, pulling from or deleting another's durable; its own works", async () => {
    const stream = ops.names.stream("GIFT");
    const durable = {
      durable_name: "wallet-host-credit",
      filter_subject: ops.names.subject("gift.gift.sent"),
      ack_policy: AckPolicy.Explicit,
    };
    const wallet = await busOf("wallet");
    await wallet.jsm.consumers.add(stream, durable);
    // The gateway follows GIFT live, so its consumer names there are `*`: all but others' durables.
    const gateway = await busOf("gateway");
    await refusal(
      gateway.jsm.consumers.add(stream, { ...durable, filter_subject: ops.names.subject("gift.x") }),
    );
    await refusal(gateway.jsm.consumers.delete(stream, "wallet-host-credit"));
    // A pull is a plain publish: as a request, the refusal comes back at once.
    await refusal(
      gateway.connection.request(`$JS.API.CONSUMER.MSG.NEXT.${stream}.wallet-host-credit`, '{"batch":1}'),
    );
    // The old create API names the consumer in the body, where permissions cannot see it.
    await refusal(
      gateway.connection.request(
        `$JS.API.CONSUMER.CREATE.${stream}`,
        JSON.stringify({
          stream_name: stream,
          config: { ...durable, durable_name: undefined, name: "wallet-host-credit" },
        }),
      ),
    );
    const gift = await busOf("gift");
    await refusal(gift.jsm.consumers.add(stream, { ...durable, durable_name: "pk-score" }));
    await refusal(gift.jsm.consumers.delete(stream, "wallet-host-credit"));
    expect((await ops.jsm.consumers.info(stream, "wallet-host-credit")).config.filter_subject).toBe(
      durable.filter_subject,
    );
  });

  it("refuses to start a runner whose durable is not in its service's grants, naming the table", async () => {
    const runner = new ConsumerRunner(
      {
        name: "gift-newcomer",
        stream: "GIFT",
        subject: "gift.gift.sent",
        schema: MoneySchema,
        handle: async () => {},
      },
      // Refused before it touches the database.
      { bus: await busOf("gift"), orm: {} as Database, logger: pino({ level: "silent" }) },
    );
    await expect(runner.start()).rejects.toThrow(
      "consumer gift-newcomer on GIFT is not in gift's bus permissions: add it to busGrants in packages/events/src/permissions.ts",
    );
  });

  it("lets a service follow the streams it follows live, and no other", async () => {
    const gateway = await busOf("gateway");
    const received: string[] = [];
    const subscription = await subscribeEphemeral(gateway, {
      stream: "GIFT",
      subject: "gift.live.*",
      onMessage: (message) => received.push(message.subject),
    });
    try {
      await publishEvent(await busOf("gift"), "gift.live.one");
      await expect.poll(() => received).toEqual([ops.names.subject("gift.live.one")]);
    } finally {
      await subscription.close();
    }
    await refusal(
      subscribeEphemeral(await busOf("pk"), { stream: "GIFT", subject: "gift.live.*", onMessage() {} }),
    );
  });
});

describe("subscriptions", () => {
  it("keeps every identity out of every other identity's inbox, and off event subjects", async () => {
    const identities = busIdentities.filter((identity) => identity !== "ops");
    for (const identity of identities) {
      const connection = await env.connectNats(identity);
      try {
        for (const other of identities) {
          if (other === identity) continue;
          expect(
            await subscriptionRefused(connection, `${ops.names.inboxPrefix(other)}.>`),
            `${identity} → ${other}`,
          ).toBe(true);
        }
        // Events are read through JetStream consumers only, never by listening on the subjects.
        expect(await subscriptionRefused(connection, ops.names.subject("order.>"))).toBe(true);
        expect(await subscriptionRefused(connection, "_INBOX.>")).toBe(true);
      } finally {
        await connection.close();
      }
    }
  });

  it("grants each identity's inbox, and ops everything", () => {
    const wallet = busPermissions("wallet", "p");
    expect(wallet.subscribe.allow).toContain("_INBOX.p.wallet.>");
    expect(wallet.publish.allow).toContain("p.dlq.replay.*");
    expect(wallet.subscribe.allow).toContain("p.dlq.answer.*");
    // Consumers answer replays on the admin's answer subjects: no allow_responses for anyone.
    expect(busPermissions("gift", "p").publish.allow).toContain("p.dlq.answer.*");
    expect(busPermissions("gift", "p").subscribe.allow).not.toContain("p.dlq.answer.*");
    expect(busPermissions("ops", "p")).toEqual({
      publish: { allow: [">"], deny: [] },
      subscribe: { allow: [">"] },
    });
  });
});
