// Proves the event toolkit's guarantees against the real Postgres and NATS: the outbox
// publishes exactly once even when the relay crashes between publish and delete, a rolled
// back transaction publishes nothing, consumers are effectively-once under redelivery, and a
// poison message reaches the DLQ with its reason after 4 deliveries without blocking others;
// its replay is done by its own consumer, from its stream, and an entry stays when the replay
// cannot happen.
import { AsyncLocalStorage } from "node:async_hooks";
import { create, toBinary } from "@bufbuild/protobuf";
import { headers as natsHeaders } from "@nats-io/nats-core";
import { type Database, type EntityManager, nativePool, openDatabase } from "@ovation/db";
import { type Money, MoneySchema } from "@ovation/proto/gen/ovation/type/v1/money_pb.ts";
import {
  codeOf,
  listenToChannel,
  type TestEnvironment,
  testEnvironment,
  testStreamMaxBytes,
  waitFor,
} from "@ovation/testkit";
import pg from "pg";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  CoalescedAnnouncer,
  ConsumerRunner,
  type ConsumerSpec,
  DlqAdmin,
  EventBus,
  enqueueEvents,
  eventOf,
  headerNames,
  inboxRetentionMs,
  OutboxRelay,
  type OutboxRelayOptions,
  type ReceivedEvent,
  RejectedEventError,
} from "../src/index.ts";
import { eventTestMigrations } from "./tables.ts";

const logger = pino({ level: process.env.TEST_LOG_LEVEL ?? "silent" });
let env: TestEnvironment;
let orm: Database;
let bus: EventBus;

beforeAll(async () => {
  env = await testEnvironment();
  orm = await openDatabase({
    url: env.databaseUrl,
    schema: "events_test",
    entities: [],
    migrations: eventTestMigrations("create table effects (event_id uuid not null, amount bigint not null)"),
  });
  bus = await EventBus.connect({
    url: env.natsUrl,
    prefix: env.prefix,
    name: "events-test",
    streamMaxBytes: testStreamMaxBytes,
    ...env.natsOps,
  });
  await bus.ensureStreams(["GIFT"]);
});

afterAll(async () => {
  await bus?.close();
  await orm?.close();
  await env?.[Symbol.asyncDispose]();
});

const money = (amount: bigint) => create(MoneySchema, { asset: "COIN", amount });

async function streamMessages(subject: string) {
  const info = await bus.jsm.streams.info(bus.names.stream("GIFT"), {
    subjects_filter: bus.names.subject(subject),
  });
  return Number(info.state.subjects?.[bus.names.subject(subject)] ?? 0);
}

function newRelay(options: Partial<Pick<OutboxRelayOptions, "wokenBy" | "pool">> = {}) {
  return nativePool(orm).then(
    (pool) =>
      new OutboxRelay({
        pool,
        databaseUrl: env.databaseUrl,
        schema: "events_test",
        bus,
        logger,
        pollIntervalMs: 60_000,
        ...options,
      }),
  );
}

describe("outbox relay", () => {
  it("publishes committed events once, woken by the NOTIFY of a writer whose handle runs no relay, and empties the outbox", async () => {
    const relay = await newRelay({ wokenBy: orm });
    await relay.start();
    // A second handle on the schema, as a CLI has: no relay of its own to wake in memory.
    const cli = await openDatabase({
      url: env.databaseUrl,
      schema: "events_test",
      entities: [],
      migrations: [],
    });
    try {
      const events = [1n, 2n, 3n].map((n) => eventOf(MoneySchema, money(n), "gift.relay.one"));
      await cli.em.fork().transactional((em) => enqueueEvents(em, events));
      // The poll interval is a minute: arriving within seconds proves the NOTIFY wake-up.
      await waitFor(async () => (await streamMessages("gift.relay.one")) === 3, { timeoutMs: 5_000 });
      const stored = await bus.jsm.streams.getMessage(bus.names.stream("GIFT"), {
        last_by_subj: bus.names.subject("gift.relay.one"),
      });
      expect(stored?.header.get("Nats-Msg-Id")).toBe(events[2]!.eventId);
      expect(stored?.header.get(headerNames.eventType)).toBe("ovation.type.v1.Money");
      await waitFor(async () => (await orm.em.fork().execute("select * from outbox")).length === 0, {
        what: "the published rows to be deleted",
      });
    } finally {
      await cli.close();
      await relay.stop();
    }
  });

  it("is woken by a commit on its own handle within milliseconds, with no NOTIFY and no poll (0035, 0051)", async () => {
    const relay = await newRelay({ wokenBy: orm });
    await relay.start();
    const listener = await listenToChannel(env.databaseUrl, "events_test_outbox");
    try {
      await waitFor(async () => (await orm.em.fork().execute("select 1 from outbox")).length === 0);
      const publishedBefore = relay.published;
      const committed = performance.now();
      await orm.em
        .fork()
        .transactional((em) => enqueueEvents(em, [eventOf(MoneySchema, money(9n), "gift.relay.local")]));
      await waitFor(() => relay.published > publishedBefore, { timeoutMs: 5_000, intervalMs: 5 });
      // The poll interval is a minute.
      expect(performance.now() - committed).toBeLessThan(500);
      expect(await streamMessages("gift.relay.local")).toBe(1);
      // Nothing on the relays' channel: the write sent no NOTIFY.
      expect(await listener.settle()).toEqual([]);
    } finally {
      await listener.stop();
      await relay.stop();
    }
  });

  it("publishes nothing for a rolled back transaction", async () => {
    const relay = await newRelay();
    await expect(
      orm.em.fork().transactional(async (em) => {
        await enqueueEvents(em, [eventOf(MoneySchema, money(5n), "gift.relay.rollback")]);
        throw new Error("debit failed");
      }),
    ).rejects.toThrow("debit failed");
    expect(await relay.drainOnce()).toBe(0);
    expect(await streamMessages("gift.relay.rollback")).toBe(0);
  });

  it("a crash after publish and before delete still yields exactly one message (restart republishes, JetStream dedupes)", async () => {
    const event = eventOf(MoneySchema, money(7n), "gift.relay.crash");
    await orm.em.fork().transactional((em) => enqueueEvents(em, [event]));
    // The crashed relay got as far as publishing; its delete never committed.
    await bus.js.publish(bus.names.subject(event.subject), event.payload, { msgID: event.eventId });
    const restarted = await newRelay();
    expect(await restarted.drainOnce()).toBe(1);
    expect(await streamMessages("gift.relay.crash")).toBe(1);
    expect(await orm.em.fork().execute("select * from outbox")).toHaveLength(0);
  });

  it("leases by index however many rows the outbox held when it was last analyzed (0053)", async () => {
    // One connection, so the relay's statements are the ones counted, its plans the ones kept.
    const pool = new pg.Pool({ connectionString: env.databaseUrl, max: 1 });
    const relay = await newRelay({ pool });
    const em = orm.em.fork();
    const seqScans = async () => {
      // Statistics reach the shared counters when a transaction ends; ask for it now.
      await pool.query("select pg_stat_force_next_flush()");
      await pool.query("select 1");
      const [row] = await em.execute<{ n: string }[]>(
        "select seq_scan::text as n from pg_stat_user_tables where relid = 'events_test.outbox'::regclass",
      );
      return Number(row!.n);
    };
    try {
      // A busy outbox, analyzed, then emptied: thousands of rows in the statistics, dead ones in
      // the pages. As `id in (subquery)`, the lease joined its ids to a scan of all of them.
      await em.execute(
        `insert into outbox (event_id, subject, type, payload)
         select gen_random_uuid(), 'gift.relay.busy', 'x', '\\x00' from generate_series(1, 5000)`,
      );
      await em.execute("analyze outbox");
      await em.execute("delete from outbox");
      const drain = async (n: number) => {
        await em.transactional((tx) =>
          enqueueEvents(tx, [eventOf(MoneySchema, money(BigInt(n)), "gift.relay.lease")]),
        );
        expect(await relay.drainOnce()).toBe(1);
      };
      // The first calls make the plan the connection keeps (custom plans first, then a generic one).
      for (let n = 0; n < 6; n++) await drain(n);
      const before = await seqScans();
      for (let n = 0; n < 4; n++) await drain(n);
      expect((await seqScans()) - before).toBe(0);
    } finally {
      await pool.end();
    }
  });
});

describe("coalesced announcer", () => {
  it("announces a held-back change from its own async context, not the changing transaction's", async () => {
    // A timer armed inside the changing transaction would run in its AsyncLocalStorage context:
    // MikroORM's em.fork() there resolves that finished transaction, and logs carry its trace.
    const caller = new AsyncLocalStorage<string>();
    const contexts: (string | undefined)[] = [];
    const announcer = new CoalescedAnnouncer({
      orm,
      logger,
      announce: async (_em, ids) => {
        contexts.push(caller.getStore());
        return contexts.length === 1 ? new Map(ids.map((id) => [id, new Date(Date.now() + 50)])) : new Map();
      },
    });
    try {
      await caller.run("the changing request", () =>
        orm.em.fork().transactional((em) => announcer.changed(em, ["battle-1"])),
      );
      await waitFor(() => contexts.length === 2, { what: "the held-back announcement" });
      expect(contexts).toEqual(["the changing request", undefined]);
    } finally {
      announcer.stop();
    }
  });
});

describe("consumer runner", () => {
  async function publish(subject: string, amount: bigint, eventId: string, msgId = eventId) {
    const headers = natsHeaders();
    headers.set(headerNames.eventId, eventId);
    return bus.js.publish(bus.names.subject(subject), toBinary(MoneySchema, money(amount)), {
      msgID: msgId,
      headers,
    });
  }

  /** A consumer of Money events on the GIFT stream, in this test's environment. */
  const moneyRunner = (spec: Omit<ConsumerSpec<typeof MoneySchema>, "stream" | "schema">) =>
    new ConsumerRunner({ ...spec, stream: "GIFT", schema: MoneySchema }, { bus, orm, logger });

  /** The effect the test consumers apply: one row per event. */
  const insertEffects = async (em: EntityManager, events: ReceivedEvent<Money>[]) => {
    for (const e of events)
      await em.execute("insert into effects values (?, ?)", [e.eventId, e.message.amount]);
  };

  const effectsOf = async (eventId: string) =>
    orm.em.fork().execute<{ amount: string }[]>("select amount from effects where event_id = ?", [eventId]);

  it("applies a redelivered event once (inbox in the same transaction as the effect)", async () => {
    const runner = moneyRunner({
      name: "effects-once",
      subject: "gift.once.*",
      handle: insertEffects,
    });
    await runner.start();
    try {
      const eventId = crypto.randomUUID();
      await publish("gift.once.a", 11n, eventId);
      // Same event again under another message id: what a replay or a duplicate producer sends.
      await publish("gift.once.a", 11n, eventId, `${eventId}-again`);
      const marker = crypto.randomUUID();
      await publish("gift.once.a", 1n, marker);
      await waitFor(async () => (await effectsOf(marker)).length === 1);
      expect(await effectsOf(eventId)).toEqual([{ amount: "11" }]);
    } finally {
      await runner.stop();
    }
  });

  it("applies two copies of one event that arrive in the same batch once", async () => {
    const batches: number[] = [];
    const runner = moneyRunner({
      name: "effects-batch-once",
      subject: "gift.twice.*",
      handle: async (em, events) => {
        batches.push(events.length);
        await insertEffects(em, events);
      },
    });
    // Both copies wait in the stream before the consumer starts, so one fetch brings both.
    const eventId = crypto.randomUUID();
    await publish("gift.twice.a", 5n, eventId);
    await publish("gift.twice.a", 5n, eventId, `${eventId}-again`);
    await runner.start();
    try {
      // Done when the server has nothing left to deliver and nothing waiting for an ack.
      await waitFor(async () => {
        const info = await bus.jsm.consumers.info(bus.names.stream("GIFT"), "effects-batch-once");
        return info.num_pending === 0 && info.num_ack_pending === 0 && info.delivered.stream_seq > 0;
      });
      expect(await effectsOf(eventId)).toEqual([{ amount: "5" }]);
      expect(batches).toEqual([1]);
    } finally {
      await runner.stop();
    }
  });

  it("prunes inbox rows and failure reasons only once they are older than the retention", async () => {
    const runner = moneyRunner({
      name: "pruned",
      subject: "gift.pruned.*",
      handle: async () => {},
    });
    const em = orm.em.fork();
    const old = new Date(Date.now() - inboxRetentionMs - 60_000);
    const [stale, fresh] = [crypto.randomUUID(), crypto.randomUUID()];
    await em.execute(
      "insert into inbox (consumer, event_id, processed_at) values ('pruned', ?, ?), ('pruned', ?, now())",
      [stale, old, fresh],
    );
    await em.execute("insert into inbox (consumer, event_id, processed_at) values ('other', ?, ?)", [
      stale,
      old,
    ]);
    await em.execute(
      "insert into consumer_failures (consumer, stream_sequence, deliveries, reason, failed_at) values ('pruned', 1, 1, 'x', ?), ('pruned', 2, 1, 'y', now())",
      [old],
    );
    expect(await runner.prune()).toBe(2);
    const left = await em.execute<{ consumer: string; event_id: string }[]>(
      "select consumer, event_id from inbox where consumer in ('pruned', 'other') order by consumer",
    );
    expect(left).toEqual([
      { consumer: "other", event_id: stale },
      { consumer: "pruned", event_id: fresh },
    ]);
    expect(
      await em.execute("select stream_sequence from consumer_failures where consumer = 'pruned'"),
    ).toEqual([{ stream_sequence: "2" }]);
  });

  it("dead-letters a message whose handler fails 4 times, with its reason, keeps the rest flowing, and replays it", async () => {
    let poisonDeliveries = 0;
    let healed = false;
    const poisonId = crypto.randomUUID();
    const runner = moneyRunner({
      name: "effects-poison",
      subject: "gift.poison.*",
      retryBackoffMs: [50, 100, 200],
      ackWaitMs: 2_000,
      handle: async (em, events) => {
        for (const e of events) {
          if (e.eventId === poisonId && !healed) {
            poisonDeliveries = Math.max(poisonDeliveries, e.deliveryCount);
            // Multi-line, like a database error: regression for headers that refused line breaks.
            throw new Error("host account is frozen\n - hint: ask support");
          }
          await em.execute("insert into effects values (?, ?)", [e.eventId, e.message.amount]);
        }
      },
    });
    await runner.start();
    const admin = new DlqAdmin(bus);
    try {
      const before = crypto.randomUUID();
      const after = crypto.randomUUID();
      await publish("gift.poison.a", 1n, before);
      await publish("gift.poison.a", 666n, poisonId);
      await publish("gift.poison.a", 2n, after);
      await waitFor(async () => (await effectsOf(after)).length === 1, {
        what: "the message after the poison",
      });
      expect(await effectsOf(before)).toHaveLength(1);

      const { entries } = await waitFor(
        async () => {
          const page = await admin.list(0, "");
          return page.entries.some((e) => e.eventId === poisonId) && page;
        },
        { what: "the DLQ entry" },
      );
      const entry = entries.find((e) => e.eventId === poisonId)!;
      expect(poisonDeliveries).toBe(4);
      expect(entry.deliveries).toBe(4);
      expect(entry.consumer).toBe("effects-poison");
      expect(entry.reason).toContain("host account is frozen - hint: ask support");
      expect(entry.reason).toContain("after 4 attempts");
      expect(entry.subject).toBe("gift.poison.a");
      expect((await admin.get(entry.id)).payload).toEqual(toBinary(MoneySchema, money(666n)));

      healed = true;
      // The consumer applied it itself, from its stream, before the admin answered.
      expect(await admin.replay(entry.id)).toBe(entry.streamSequence);
      expect(await effectsOf(poisonId)).toEqual([{ amount: "666" }]);
      expect((await admin.list(0, "")).entries.some((e) => e.id === entry.id)).toBe(false);
      await expect(admin.get(entry.id)).rejects.toThrow(/no DLQ entry/);
    } finally {
      await runner.stop();
    }
  });

  it("keeps an entry whose replay cannot happen: no replica runs, the handler refuses again, the original is gone", async () => {
    let refusing = true;
    const runner = moneyRunner({
      name: "effects-replay-refused",
      subject: "gift.refused.*",
      handle: async (em, events) => {
        if (refusing) throw new RejectedEventError("no fact behind it");
        await insertEffects(em, events);
      },
    });
    await runner.start();
    const admin = new DlqAdmin(bus);
    const eventId = crypto.randomUUID();
    await publish("gift.refused.a", 9n, eventId);
    const entry = await waitFor(async () =>
      (await admin.list(100, "")).entries.find((e) => e.eventId === eventId),
    );
    expect(entry.reason).toContain("no fact behind it");
    await expect(admin.replay(entry.id)).rejects.toThrow(
      /stays: consumer effects-replay-refused failed to apply it again: RejectedEventError: no fact behind it/,
    );
    await runner.stop();
    expect(await codeOf(admin.replay(entry.id))).toBe("Unavailable");
    await expect(admin.replay(entry.id)).rejects.toThrow("no replica of consumer effects-replay-refused");

    await bus.jsm.streams.deleteMessage(bus.names.stream("GIFT"), Number(entry.streamSequence));
    refusing = false;
    await runner.start();
    try {
      expect(await codeOf(admin.replay(entry.id))).toBe("FailedPrecondition");
      await expect(admin.replay(entry.id)).rejects.toThrow("is no longer in its stream");
      expect((await admin.get(entry.id)).eventId).toBe(eventId);
      expect(await effectsOf(eventId)).toEqual([]);
    } finally {
      await runner.stop();
    }
  });

  it("dead-letters an undecodable payload at once with the reason", async () => {
    const runner = moneyRunner({
      name: "effects-garbage",
      subject: "gift.garbage.*",
      handle: async () => {},
    });
    await runner.start();
    try {
      const eventId = crypto.randomUUID();
      const headers = natsHeaders();
      headers.set(headerNames.eventId, eventId);
      await bus.js.publish(bus.names.subject("gift.garbage.a"), new Uint8Array([0xff, 0xff, 0xff]), {
        headers,
      });
      const admin = new DlqAdmin(bus);
      const entry = await waitFor(async () =>
        (await admin.list(100, "")).entries.find((e) => e.eventId === eventId),
      );
      expect(entry.reason).toContain("undecodable ovation.type.v1.Money");
      expect(entry.deliveries).toBe(1);
    } finally {
      await runner.stop();
    }
  });
});
