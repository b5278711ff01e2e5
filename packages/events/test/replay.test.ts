// Replays of a projection against the real Postgres and NATS, on a toy projection (per-key
// sums of Money events): the rebuilt tables equal what the live consumer built, also when an
// event is poison (the live consumer dead-letters it, the replay skips it), `--from` leaves
// out what came before it, and the CLI refuses bad arguments before touching anything.
import { create, toBinary } from "@bufbuild/protobuf";
import { headers as natsHeaders } from "@nats-io/nats-core";
import { type Database, type EntityManager, openDatabase } from "@ovation/db";
import { MoneySchema } from "@ovation/proto/gen/ovation/type/v1/money_pb.ts";
import { type TestEnvironment, testEnvironment, testStreamMaxBytes, waitFor } from "@ovation/testkit";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  ConsumerRunner,
  type ConsumerSpec,
  EventBus,
  headerNames,
  parseReplayStart,
  type ReceivedEvent,
  replayCli,
  replayProjection,
} from "../src/index.ts";
import { eventTestMigrations } from "./tables.ts";

const logger = pino({ level: process.env.TEST_LOG_LEVEL ?? "silent" });
const schema = "replay_test";
const subject = "gift.replay.money";
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
      "create table sums (asset text primary key, total bigint not null, events int not null)",
    ),
  });
  bus = await EventBus.connect({
    url: env.natsUrl,
    prefix: env.prefix,
    name: "replay-test",
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

/** The toy projection: totals per asset; an amount below zero is poison. */
const projection: ConsumerSpec<typeof MoneySchema> = {
  name: "replay-sums",
  stream: "GIFT",
  subject,
  schema: MoneySchema,
  projection: { tables: ["sums"] },
  batchMax: 50,
  retryBackoffMs: [10, 10, 10],
  async handle(em: EntityManager, events: ReceivedEvent<ReturnType<typeof money>>[]) {
    for (const { message } of events) {
      if (message.amount < 0n) throw new Error("negative amount");
      await em.execute(
        `insert into sums (asset, total, events) values (?, ?, 1)
         on conflict (asset) do update set total = sums.total + excluded.total, events = sums.events + 1`,
        [message.asset, message.amount.toString()],
      );
    }
  },
};

const money = (asset: string, amount: bigint) => create(MoneySchema, { asset, amount });

async function publish(asset: string, amount: bigint): Promise<number> {
  const headers = natsHeaders();
  const eventId = crypto.randomUUID();
  headers.set(headerNames.eventId, eventId);
  headers.set(headerNames.eventType, MoneySchema.typeName);
  const ack = await bus.js.publish(bus.names.subject(subject), toBinary(MoneySchema, money(asset, amount)), {
    msgID: eventId,
    headers,
  });
  return ack.seq;
}

const sums = async () => orm.em.fork().execute("select asset, total::text, events from sums order by asset");
const inboxSize = async () =>
  Number(
    (
      await orm.em
        .fork()
        .execute<{ n: number }[]>("select count(*)::int as n from inbox where consumer = ?", [
          projection.name,
        ])
    )[0]!.n,
  );

describe("replay", () => {
  it("rebuilds what the live consumer built, skipping the poison event the live consumer refused too", async () => {
    const live = new ConsumerRunner(projection, { bus, orm, logger });
    await live.start();
    try {
      for (let i = 0; i < 120; i++) await publish(i % 2 === 0 ? "COIN" : "GEM", BigInt(i));
      await publish("COIN", -1n);
      await waitFor(async () => (await inboxSize()) === 120, { what: "the live projection" });
      const built = await sums();
      expect(built).toEqual([
        { asset: "COIN", total: String(59 * 60), events: 60 },
        { asset: "GEM", total: String(60 * 60), events: 60 },
      ]);
      await orm.em.fork().execute("delete from sums");

      const result = await replayProjection(projection, { bus, orm, logger, schema });
      expect([result.events, result.applied, result.skipped]).toEqual([121, 120, 1]);
      expect(await sums()).toEqual(built);
      // The live consumer goes on, into the swapped-in table, and applies only what is new.
      await publish("GEM", 1_000n);
      await waitFor(async () => (await inboxSize()) === 121, { what: "the next event" });
      expect(await sums()).toEqual([built[0], { asset: "GEM", total: String(60 * 60 + 1_000), events: 61 }]);
    } finally {
      await live.stop();
    }
  });

  it("--from a sequence leaves out the events before it", async () => {
    const from = await publish("FROM", 5n);
    await publish("FROM", 7n);
    await replayProjection(projection, { bus, orm, logger, schema, from: { sequence: from + 1 } });
    expect(await sums()).toEqual([{ asset: "FROM", total: "7", events: 1 }]);
  });

  it("parses --from and refuses bad command lines without touching anything", async () => {
    expect(parseReplayStart("42")).toEqual({ sequence: 42 });
    expect(parseReplayStart("2026-12-01T00:00:00Z")).toEqual({ time: new Date("2026-12-01T00:00:00Z") });
    expect(() => parseReplayStart("yesterday")).toThrow(/neither a sequence nor/);
    expect(() => parseReplayStart("0")).toThrow(/not a sequence/);
    const options = {
      schema,
      databaseUrl: "postgres://nobody@127.0.0.1:1/none",
      natsUrl: "nats://127.0.0.1:1",
      prefix: "",
      logger,
      projections: () => [],
    };
    for (const args of [
      [],
      ["x", "--from"],
      ["x", "--since", "1"],
      ["x", "--from", "soon"],
      ["x", "--from", "1", "y"],
    ])
      expect(await replayCli(args, options)).toBe(2);
  });
});
