// Proves the event toolkit's behaviour under faults, with outages simulated by a fault proxy
// between the code under test and the shared Postgres or NATS:
// - an outbox row JetStream refuses is set aside while the other rows keep flowing, and the
//   relay never holds a transaction open while it talks to NATS;
// - the relay publishes again within a second of NATS coming back (even a publish that was in
//   flight when it went away), and LISTENs again after losing its Postgres connection;
// - a consumer whose database is cut pauses and spends no delivery: nothing is dead-lettered;
// - a consumer's calls to other services run before its transaction, for new events only, and
//   a call that misses its deadline is made again rather than counted as the event's failure;
// - a message that never gets an answer is moved to the DLQ from the server's advisory even
//   when no mover ran while its deliveries ran out;
// - a dead letter outlives 10,000 NAK advisories in streams of the minimum size.
import { create, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { AckPolicy, DeliverPolicy } from "@nats-io/jetstream";
import { nanos, headers as natsHeaders } from "@nats-io/nats-core";
import { type Database, type EntityManager, nativePool, openDatabase } from "@ovation/db";
import { type Money, MoneySchema } from "@ovation/proto/gen/ovation/type/v1/money_pb.ts";
import { FaultProxy, type TestEnvironment, testEnvironment, waitFor } from "@ovation/testkit";
import pg from "pg";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  ConsumerRunner,
  type ConsumerSpec,
  DlqAdmin,
  DlqMover,
  EventBus,
  enqueueEvents,
  eventOf,
  headerNames,
  OutboxAdmin,
  OutboxRelay,
  type ReceivedEvent,
} from "../src/index.ts";
import { eventTestMigrations } from "./tables.ts";

const schema = "events_faults";
/** The smallest stream the configuration allows: 10,000 advisories would not fit in it. */
const smallStreamBytes = 1024 * 1024;
const logger = pino({ level: process.env.TEST_LOG_LEVEL ?? "silent" });
let env: TestEnvironment;
let orm: Database;
let bus: EventBus;

beforeAll(async () => {
  env = await testEnvironment();
  orm = await openDatabase({
    url: env.databaseUrl,
    schema,
    entities: [],
    migrations: eventTestMigrations(
      "create table effects (event_id uuid not null, amount bigint not null, deliveries int not null)",
    ),
  });
  bus = await connectBus(env.natsUrl);
  await bus.ensureStreams(["GIFT"]);
});

afterAll(async () => {
  await bus?.close();
  await orm?.close();
  await env?.[Symbol.asyncDispose]();
});

const connectBus = (url: string) =>
  EventBus.connect({
    url,
    prefix: env.prefix,
    name: "events-faults",
    streamMaxBytes: smallStreamBytes,
    ...env.natsOps,
  });

const money = (amount: bigint) => create(MoneySchema, { asset: "COIN", amount });
const giftStream = () => bus.names.stream("GIFT");

/** Messages stored on the subjects `filter` matches (wildcards allowed). */
async function streamCount(filter: string): Promise<number> {
  const info = await bus.jsm.streams.info(giftStream(), { subjects_filter: bus.names.subject(filter) });
  return Object.values(info.state.subjects ?? {}).reduce((sum, count) => sum + Number(count), 0);
}

async function enqueue(subjects: string[]): Promise<void> {
  await orm.em.fork().transactional((em) =>
    enqueueEvents(
      em,
      subjects.map((subject, i) => eventOf(MoneySchema, money(BigInt(i + 1)), subject)),
    ),
  );
}

async function relayWith(options: {
  bus?: EventBus;
  databaseUrl?: string;
  pollIntervalMs?: number;
  wokenBy?: Database;
}) {
  return new OutboxRelay({
    wokenBy: options.wokenBy,
    pool: await nativePool(orm),
    databaseUrl: options.databaseUrl ?? env.databaseUrl,
    schema,
    bus: options.bus ?? bus,
    logger,
    pollIntervalMs: options.pollIntervalMs ?? 100,
  });
}

describe("outbox relay under faults", () => {
  it("sets aside a row JetStream refuses, records why, and keeps publishing the others", async () => {
    const relay = await relayWith({});
    // No stream captures "nowhere.*": JetStream can never store this row.
    await enqueue(["gift.isolate.a", "nowhere.poison.row", "gift.isolate.b", "gift.isolate.c"]);
    expect(await relay.drainOnce()).toBe(3);
    expect(await streamCount("gift.isolate.*")).toBe(3);

    const [stuck] = await new OutboxAdmin(await nativePool(orm), schema).failing();
    expect(stuck).toMatchObject({ subject: "nowhere.poison.row", attempts: 1 });
    expect(stuck!.lastError).toMatch(/no responders/i);
    expect(stuck!.nextAttempt.getTime()).toBeGreaterThan(Date.now());

    // Later events flow while the bad row waits out its backoff.
    await enqueue(["gift.isolate.d"]);
    expect(await relay.drainOnce()).toBe(1);
    expect(await streamCount("gift.isolate.*")).toBe(4);

    // An operator can send it again now; it is refused again and counted, never dropped.
    expect(await new OutboxAdmin(await nativePool(orm), schema).retryNow(stuck!.id)).toBe(true);
    expect(await relay.drainOnce()).toBe(0);
    const [again] = await new OutboxAdmin(await nativePool(orm), schema).failing();
    expect(again).toMatchObject({ id: stuck!.id, attempts: 2 });
    await orm.em.fork().execute("delete from outbox");
  });

  it("holds no transaction open while it waits for NATS", async () => {
    await using natsProxy = await FaultProxy.start(env.natsUrl);
    const slowBus = await connectBus(natsProxy.url(env.natsUrl));
    try {
      const relay = await relayWith({ bus: slowBus });
      await enqueue(Array.from({ length: 20 }, (_, i) => `gift.slow.${i}`));
      natsProxy.delay(400);
      const draining = relay.drainOnce();
      await new Promise((resolve) => setTimeout(resolve, 250));
      // Mid-publish: no session of this database may sit inside a transaction.
      const admin = new pg.Client({ connectionString: env.databaseUrl });
      await admin.connect();
      const { rows } = await admin.query(
        "select pid, state from pg_stat_activity where datname = current_database() and state like 'idle in transaction%'",
      );
      await admin.end();
      expect(rows).toEqual([]);
      expect(await draining).toBe(20);
    } finally {
      await slowBus.close();
    }
  });

  it("publishes again within a second of NATS coming back, including a publish lost in flight", async () => {
    await using natsProxy = await FaultProxy.start(env.natsUrl);
    const cutBus = await connectBus(natsProxy.url(env.natsUrl));
    const relay = await relayWith({ bus: cutBus });
    await relay.start();
    try {
      // The first batch is on the wire (held by the proxy) when NATS goes away.
      natsProxy.delay(300);
      await enqueue(["gift.restart.a", "gift.restart.b"]);
      await new Promise((resolve) => setTimeout(resolve, 150));
      natsProxy.cut();
      await enqueue(["gift.restart.c"]);
      await new Promise((resolve) => setTimeout(resolve, 1_500));

      natsProxy.restore();
      const restored = performance.now();
      await waitFor(async () => (await streamCount("gift.restart.*")) === 3, {
        timeoutMs: 10_000,
        what: "all three events",
      });
      expect(performance.now() - restored).toBeLessThan(1_000);
    } finally {
      await relay.stop();
      await cutBus.close();
    }
  });

  it("wakes the other replicas' relays by NOTIFY while its own relay has lost NATS (0051)", async () => {
    await using natsProxy = await FaultProxy.start(env.natsUrl);
    const cutBus = await connectBus(natsProxy.url(env.natsUrl));
    // This replica's relay, woken in memory by writes through `orm`, and another replica's,
    // woken only by NOTIFY: both poll once a minute.
    const own = await relayWith({ bus: cutBus, wokenBy: orm, pollIntervalMs: 60_000 });
    const other = await relayWith({ pollIntervalMs: 60_000 });
    await own.start();
    await other.start();
    try {
      await waitFor(async () => (await orm.em.fork().execute("select 1 from outbox")).length === 0);
      natsProxy.cut();
      await waitFor(() => !cutBus.connected, { what: "the replica to notice it lost NATS" });
      const written = performance.now();
      await enqueue(["gift.elsewhere.a", "gift.elsewhere.b"]);
      await waitFor(() => other.published === 2, {
        timeoutMs: 5_000,
        intervalMs: 5,
        what: "the other replica to publish",
      });
      // Its poll is a minute away: only the NOTIFY can have woken it.
      expect(performance.now() - written).toBeLessThan(1_000);
      expect(await streamCount("gift.elsewhere.*")).toBe(2);
      expect(own.published).toBe(0);
    } finally {
      await own.stop();
      await other.stop();
      await cutBus.close();
    }
  });

  it("LISTENs again after losing its Postgres connection, so a NOTIFY still wakes it", async () => {
    await using pgProxy = await FaultProxy.start(env.databaseUrl);
    // Polling once a minute: only a NOTIFY can publish within the test's timeout.
    const relay = await relayWith({ databaseUrl: pgProxy.url(env.databaseUrl), pollIntervalMs: 60_000 });
    await relay.start();
    try {
      const before = pgProxy.accepted;
      pgProxy.cut();
      await new Promise((resolve) => setTimeout(resolve, 300));
      pgProxy.restore();
      await waitFor(() => pgProxy.accepted > before, { what: "a new LISTEN connection" });
      // Let the relay's wake-up after reconnecting pass, so only a fresh NOTIFY can publish.
      await waitFor(async () => (await orm.em.fork().execute("select 1 from outbox")).length === 0);
      const publishedBefore = relay.published;
      await enqueue(["gift.relisten.a"]);
      await waitFor(() => relay.published > publishedBefore, {
        timeoutMs: 5_000,
        what: "the NOTIFY wake-up",
      });
      expect(await streamCount("gift.relisten.a")).toBe(1);
    } finally {
      await relay.stop();
    }
  });
});

describe("consumers under faults", () => {
  async function publish(subject: string, amount: bigint) {
    const eventId = crypto.randomUUID();
    const headers = natsHeaders();
    headers.set(headerNames.eventId, eventId);
    await bus.js.publish(bus.names.subject(subject), toBinary(MoneySchema, money(amount)), {
      msgID: eventId,
      headers,
    });
    return eventId;
  }

  const recordEffects = async (em: EntityManager, events: ReceivedEvent<Money>[]) => {
    for (const e of events)
      await em.execute("insert into effects values (?, ?, ?)", [
        e.eventId,
        e.message.amount,
        e.deliveryCount,
      ]);
  };

  it("pauses through a database outage without spending a delivery, then applies every event once", async () => {
    await using pgProxy = await FaultProxy.start(env.databaseUrl);
    const proxiedOrm = await openDatabase({
      url: pgProxy.url(env.databaseUrl),
      schema,
      entities: [],
      migrations: [],
      migrate: false,
    });
    // A short ack wait: without holding its messages the consumer would see them redelivered
    // (and counted) several times during the outage.
    const runner = new ConsumerRunner(
      {
        name: "outage-paused",
        stream: "GIFT",
        subject: "gift.outage.*",
        schema: MoneySchema,
        retryBackoffMs: [50, 100, 200],
        ackWaitMs: 500,
        handle: recordEffects,
      },
      { bus, orm: proxiedOrm, logger },
    );
    await runner.start();
    try {
      pgProxy.cut();
      const ids: string[] = [];
      for (let i = 1; i <= 20; i++) ids.push(await publish("gift.outage.a", BigInt(i)));
      // The outage lasts several ack waits.
      await new Promise((resolve) => setTimeout(resolve, 3_000));
      pgProxy.restore();
      const effects = await waitFor(
        async () => {
          const rows = await orm.em
            .fork()
            .execute<{ event_id: string; deliveries: number }[]>(
              "select event_id, deliveries from effects where event_id in (select value::uuid from jsonb_array_elements_text(?::jsonb))",
              [JSON.stringify(ids)],
            );
          return rows.length === ids.length && rows;
        },
        { timeoutMs: 10_000, what: "every event applied" },
      );
      expect(effects.every((row) => row.deliveries === 1)).toBe(true);
      expect(
        await orm.em.fork().execute("select * from consumer_failures where consumer = 'outage-paused'"),
      ).toEqual([]);
      expect(
        (await new DlqAdmin(bus).list(100, "")).entries.filter((e) => e.consumer === "outage-paused"),
      ).toEqual([]);
    } finally {
      await runner.stop();
      await proxiedOrm.close();
    }
  });

  it("calls other services before the transaction, for new events only, and waits out a missed deadline", async () => {
    const calls = new Map<string, number>();
    const openTransactions: unknown[] = [];
    const watcher = new pg.Client({ connectionString: env.databaseUrl });
    await watcher.connect();
    const spec: ConsumerSpec<typeof MoneySchema, bigint> = {
      name: "prepared-calls",
      stream: "GIFT",
      subject: "gift.prepared.*",
      schema: MoneySchema,
      retryBackoffMs: [50, 100, 200],
      ackWaitMs: 500,
      // The "other service": its first two answers for each event miss their deadline.
      prepare: async (events) => {
        const { rows } = await watcher.query(
          "select pid from pg_stat_activity where datname = current_database() and state like 'idle in transaction%'",
        );
        openTransactions.push(...rows);
        return events.map((e) => {
          const n = (calls.get(e.eventId) ?? 0) + 1;
          calls.set(e.eventId, n);
          if (n <= 2) throw new ConnectError("no answer in time", Code.DeadlineExceeded);
          return e.message.amount * 10n;
        });
      },
      handle: async (em, events, answers) => {
        for (const [i, e] of events.entries())
          await em.execute("insert into effects values (?, ?, ?)", [e.eventId, answers[i], e.deliveryCount]);
      },
    };
    const runner = new ConsumerRunner(spec, { bus, orm, logger });
    await runner.start();
    try {
      const ids = [await publish("gift.prepared.a", 1n), await publish("gift.prepared.a", 2n)];
      const effects = await waitFor(
        async () => {
          const rows = await orm.em
            .fork()
            .execute<{ amount: string }[]>(
              "select amount::text from effects where event_id in (select value::uuid from jsonb_array_elements_text(?::jsonb)) order by amount",
              [JSON.stringify(ids)],
            );
          return rows.length === ids.length && rows;
        },
        { what: "both events applied" },
      );
      expect(effects.map((row) => row.amount)).toEqual(["10", "20"]);
      expect(openTransactions).toEqual([]);
      // A missed deadline is an unknown outcome, not a failure of the event.
      expect(
        await orm.em.fork().execute("select * from consumer_failures where consumer = 'prepared-calls'"),
      ).toEqual([]);
      // Redelivered after it was applied, the event is not prepared (called) again.
      const before = calls.get(ids[0]!);
      const headers = natsHeaders();
      headers.set(headerNames.eventId, ids[0]!);
      await bus.js.publish(bus.names.subject("gift.prepared.a"), toBinary(MoneySchema, money(1n)), {
        headers,
      });
      const marker = await publish("gift.prepared.a", 3n);
      await waitFor(async () => (calls.get(marker) ?? 0) >= 3, { what: "the marker event prepared" });
      await waitFor(
        async () =>
          (await orm.em.fork().execute("select 1 from effects where event_id = ?", [marker])).length === 1,
        { what: "the marker event applied" },
      );
      expect(calls.get(ids[0]!)).toBe(before);
    } finally {
      await runner.stop();
      await watcher.end();
    }
  });

  it("moves a message that never got an answer to the DLQ from the advisory, even though no mover ran while its deliveries ran out", async () => {
    const eventId = await publish("gift.crashloop.a", 13n);
    await publish("gift.crashloop.b", 14n);
    // A consumer that takes each message and dies each time: it never answers.
    await bus.jsm.consumers.add(giftStream(), {
      durable_name: "crash-loop",
      filter_subject: bus.names.subject("gift.crashloop.*"),
      ack_policy: AckPolicy.Explicit,
      deliver_policy: DeliverPolicy.All,
      ack_wait: nanos(200),
      max_deliver: 3,
    });
    const consumer = await bus.js.consumers.get(giftStream(), "crash-loop");
    const deliveries: number[] = [];
    for (;;) {
      const message = await consumer.next({ expires: 1_000 });
      // The server notices an exhausted message when it next looks for one to deliver.
      if (message === null) break;
      deliveries.push(message.info.deliveryCount);
    }
    expect(deliveries.sort()).toEqual([1, 1, 2, 2, 3, 3]);
    const advisories = bus.names.stream("DLQ_ADVISORIES");
    await waitFor(async () => (await bus.jsm.streams.info(advisories)).state.messages >= 2, {
      what: "both max-deliveries advisories, kept while no mover runs",
    });
    const admin = new DlqAdmin(bus);
    expect((await admin.list(100, "")).entries.some((e) => e.eventId === eventId)).toBe(false);
    // One of them is removed from its stream before any mover sees the advisory.
    const gone = await bus.jsm.streams.getMessage(giftStream(), {
      last_by_subj: bus.names.subject("gift.crashloop.b"),
    });
    await bus.jsm.streams.deleteMessage(giftStream(), gone!.seq);

    const mover = new DlqMover({ bus, logger });
    await mover.start();
    try {
      const entries = await waitFor(
        async () => {
          const { entries } = await admin.list(100, "");
          const moved = entries.filter((e) => e.consumer === "crash-loop");
          return moved.length === 2 && moved;
        },
        { what: "both moved entries" },
      );
      const entry = entries.find((e) => e.eventId === eventId)!;
      expect(entry).toMatchObject({ consumer: "crash-loop", subject: "gift.crashloop.a", deliveries: 3 });
      expect(entry.reason).toMatch(/without an acknowledgement/);
      expect((await admin.get(entry.id)).payload).toEqual(toBinary(MoneySchema, money(13n)));
      // JetStream said "no message found": the entry says so, and has nothing to replay.
      const orphan = entries.find((e) => e.eventId !== eventId)!;
      expect(orphan.reason).toContain("the original is no longer in its stream");
      expect(orphan.subject).toBe("");
    } finally {
      await mover.stop();
    }
  });

  it("keeps a dead letter through 10,000 NAK advisories in streams of the minimum size", async () => {
    const eventId = await publish("gift.keep.a", 7n);
    const runner = new ConsumerRunner(
      {
        name: "keep-dead",
        stream: "GIFT",
        subject: "gift.keep.*",
        schema: MoneySchema,
        attemptsMax: 1,
        retryBackoffMs: [],
        handle: async () => {
          throw new Error("never works");
        },
      },
      { bus, orm, logger },
    );
    await runner.start();
    const admin = new DlqAdmin(bus);
    const entry = await waitFor(async () =>
      (await admin.list(100, "")).entries.find((e) => e.eventId === eventId),
    );
    await runner.stop();

    // A consumer that rejects one message 10,000 times: each NAK is an advisory on the server.
    const noisy = bus.names.subject("gift.noise.a");
    await bus.js.publish(noisy, new Uint8Array([1]));
    await bus.jsm.consumers.add(giftStream(), {
      durable_name: "nak-noise",
      filter_subject: noisy,
      ack_policy: AckPolicy.Explicit,
      deliver_policy: DeliverPolicy.All,
      max_deliver: -1,
    });
    let heard = 0;
    const advisorySubscription = bus.connection.subscribe(
      `$JS.EVENT.ADVISORY.CONSUMER.MSG_NAKED.${giftStream()}.nak-noise`,
      {
        callback: () => {
          heard++;
        },
      },
    );
    const consumer = await bus.js.consumers.get(giftStream(), "nak-noise");
    let naks = 0;
    const messages = await consumer.consume({
      max_messages: 1,
      callback: (message) => {
        if (++naks <= 10_000) message.nak();
        else message.ack();
      },
    });
    await waitFor(() => heard >= 10_000, {
      timeoutMs: 60_000,
      intervalMs: 100,
      what: "10,000 NAK advisories",
    });
    await messages.close();
    advisorySubscription.unsubscribe();

    expect((await admin.get(entry.id)).eventId).toBe(eventId);
    expect((await admin.get(entry.id)).payload).toEqual(toBinary(MoneySchema, money(7n)));
  });
});
