// Proves that events ride out the loss of a JetStream node (decision 0042). On a three-node
// cluster with R3 streams, two replicas of a service (each with its own connection, outbox
// relay and runner of one durable consumer, as the `gift` identity with its permissions) work
// through a stream of outbox rows while the stream's leader is killed with SIGKILL and started
// again: every row is in the stream exactly once (none lost after its ack, no copy by
// Nats-Msg-Id), no row was counted as refused (the election is an outage, not a bad row), the
// consumer applied every event once, and a live feed kept going. Also: an owner raises the
// replicas of an existing stream in place (messages and durable consumers follow), and the
// route port refuses a node without the routes' password.
import net from "node:net";
import { create } from "@bufbuild/protobuf";
import { AckPolicy, DeliverPolicy } from "@nats-io/jetstream";
import { nanos } from "@nats-io/nats-core";
import { type Database, type EntityManager, nativePool, openDatabase } from "@ovation/db";
import { type Money, MoneySchema } from "@ovation/proto/gen/ovation/type/v1/money_pb.ts";
import { type TestEnvironment, testEnvironment, testStreamMaxBytes, waitFor } from "@ovation/testkit";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  ConsumerRunner,
  EventBus,
  enqueueEvents,
  eventOf,
  followStreamReplicas,
  OutboxRelay,
  type ReceivedEvent,
  subscribeEphemeral,
} from "../src/index.ts";
import { eventTestMigrations } from "./tables.ts";

/** Events the workload writes: transactions of `perTransaction`, one every `pauseMs`. */
const workload = { transactions: 30, perTransaction: 50, pauseMs: 100, killAfter: 8 } as const;
const eventsTotal = workload.transactions * workload.perTransaction;
const schema = "cluster_test";
const consumerName = "gift-log";

/** Warnings the relays and runners log: a refused outbox row shows up here. */
const warnings: string[] = [];
const logger = pino({ level: "warn" }, { write: (line: string) => warnings.push(line) });
let env: TestEnvironment;
let orm: Database;

beforeAll(async () => {
  env = await testEnvironment({ natsCluster: 3 });
  orm = await openDatabase({
    url: env.databaseUrl,
    schema,
    entities: [],
    migrations: eventTestMigrations("create table effects (event_id uuid not null, replica text not null)"),
    poolMax: 6,
  });
}, 60_000);

afterAll(async () => {
  await orm?.close();
  await env?.[Symbol.asyncDispose]();
});

/** A connection as `identity` with the replicas a cluster deployment configures. */
const connect = (name: string, identity: "gift" | "pk" | "ops", url = env.natsUrl, replicas = 3) =>
  EventBus.connect({
    url,
    prefix: env.prefix,
    name,
    streamMaxBytes: testStreamMaxBytes,
    replicas,
    ...env.natsCredentials(identity),
  });

/** One replica of the service: its own connection, outbox relay and consumer runner. */
async function startReplica(name: string, url: string) {
  const bus = await connect(name, "gift", url);
  await bus.ensureStreams(["GIFT"]);
  const relay = new OutboxRelay({
    pool: await nativePool(orm),
    databaseUrl: env.databaseUrl,
    schema,
    bus,
    logger,
  });
  const runner = new ConsumerRunner(
    {
      name: consumerName,
      stream: "GIFT",
      subject: "gift.cluster.*",
      schema: MoneySchema,
      batchMax: 100,
      handle: async (em: EntityManager, events: ReceivedEvent<Money>[]) => {
        for (const event of events)
          await em.execute("insert into effects (event_id, replica) values (?, ?)", [event.eventId, name]);
      },
    },
    { bus, orm, logger },
  );
  await relay.start();
  await runner.start();
  return {
    bus,
    async stop() {
      await runner.stop();
      await relay.stop();
      await bus.close();
    },
  };
}

async function writeWorkload(onTransaction: (index: number) => Promise<void>): Promise<string[]> {
  const written: string[] = [];
  for (let index = 0; index < workload.transactions; index++) {
    const events = Array.from({ length: workload.perTransaction }, (_, n) =>
      eventOf(
        MoneySchema,
        create(MoneySchema, { asset: "COIN", amount: BigInt(n + 1) }),
        `gift.cluster.${index % 10}`,
      ),
    );
    await orm.em.fork().transactional((em) => enqueueEvents(em, events));
    written.push(...events.map((event) => event.eventId));
    await onTransaction(index);
    await new Promise((resolve) => setTimeout(resolve, workload.pauseMs));
  }
  return written;
}

/** Every Nats-Msg-Id stored on gift.cluster.*, read once through a throwaway consumer. */
async function storedMessageIds(ops: EventBus): Promise<string[]> {
  const stream = ops.names.stream("GIFT");
  const created = await ops.jsm.consumers.add(stream, {
    name: "cluster-test-reader",
    filter_subject: ops.names.subject("gift.cluster.*"),
    ack_policy: AckPolicy.None,
    deliver_policy: DeliverPolicy.All,
    mem_storage: true,
    num_replicas: 1,
    inactive_threshold: nanos(30_000),
  });
  const consumer = await ops.js.consumers.get(stream, "cluster-test-reader");
  const ids: string[] = [];
  while (ids.length < created.num_pending) {
    const batch = await consumer.fetch({ max_messages: 500, expires: 2_000 });
    for await (const message of batch) ids.push(message.headers?.get("Nats-Msg-Id") ?? "");
  }
  await ops.jsm.consumers.delete(stream, "cluster-test-reader");
  return ids;
}

describe("a three-node JetStream cluster", () => {
  it("keeps every outbox row exactly once in its R3 stream, and applies each once, through the loss of the stream leader", async () => {
    const ops = await connect("cluster-test-ops", "ops");
    const cluster = env.natsCluster!;
    try {
      await ops.ensureStreams(["GIFT"]);
      const stream = ops.names.stream("GIFT");
      const leader = (await ops.jsm.streams.info(stream)).cluster!.leader!;
      // The first replica connects to the stream leader's node only: when that node is killed,
      // the client has to find the others itself (the cluster told it where they are).
      const first = await startReplica("replica-a", cluster.node(leader).url);
      const second = await startReplica("replica-b", env.natsUrl);
      const before = await ops.jsm.streams.info(stream);
      expect(before.config.num_replicas).toBe(3);
      expect(before.cluster?.replicas).toHaveLength(2);
      const consumerBefore = await ops.jsm.consumers.info(stream, consumerName);
      expect(consumerBefore.config.num_replicas).toBe(followStreamReplicas);
      expect(consumerBefore.cluster?.replicas).toHaveLength(2);
      const live: string[] = [];
      const feed = await subscribeEphemeral(first.bus, {
        stream: "GIFT",
        subject: "gift.cluster.*",
        onMessage: (message) => live.push(message.headers?.get("Nats-Msg-Id") ?? ""),
      });

      // Part-way through, the stream leader's node dies (the first replica's server with it).
      let killedAt = 0;
      const written = await writeWorkload(async (index) => {
        if (index !== workload.killAfter) return;
        killedAt = performance.now();
        await cluster.kill(leader);
      });
      // Started again once the workload is written: whatever the election held back is still
      // in the outbox, and must arrive too.
      await cluster.restart(leader);

      await waitFor(async () => (await orm.em.fork().execute("select 1 from outbox limit 1")).length === 0, {
        timeoutMs: 30_000,
        what: "the outbox to be empty",
      });
      const newLeader = (await ops.jsm.streams.info(stream)).cluster?.leader;
      const stored = await storedMessageIds(ops);
      expect(stored).toHaveLength(eventsTotal);
      expect(new Set(stored).size).toBe(eventsTotal);
      expect(new Set(stored)).toEqual(new Set(written));
      await waitFor(
        async () =>
          (await orm.em.fork().execute<{ n: number }[]>("select count(*)::int as n from effects"))[0]!.n >=
          eventsTotal,
        { timeoutMs: 30_000, what: "the consumer to apply every event" },
      );
      const recoveredMs = Math.round(performance.now() - killedAt);
      const effects = await orm.em
        .fork()
        .execute<{ n: number; distinct: number; replicas: number }[]>(
          "select count(*)::int as n, count(distinct event_id)::int as distinct, count(distinct replica)::int as replicas from effects",
        );
      expect(effects[0]).toMatchObject({ n: eventsTotal, distinct: eventsTotal });
      // Not one row was pushed back as refused: the election paused the relays instead.
      expect(warnings.filter((line) => line.includes("could not be published")).length).toBe(0);
      // The live feed kept going: it delivers what is published now.
      await waitFor(() => feed.live, { what: "the live feed to be live" });
      const marker = eventOf(
        MoneySchema,
        create(MoneySchema, { asset: "COIN", amount: 1n }),
        "gift.cluster.x",
      );
      await orm.em.fork().transactional((em) => enqueueEvents(em, [marker]));
      await waitFor(() => live.includes(marker.eventId), { what: "the marker on the live feed" });
      console.info(
        `cluster: ${eventsTotal} events, killed stream leader ${leader} (then ${newLeader}), ` +
          `${recoveredMs} ms before the last was applied; stored ${stored.length}, ` +
          `distinct ${new Set(stored).size}; applied ${effects[0]!.n} by ${effects[0]!.replicas} replicas; ` +
          `live feed generation ${feed.generation}, ${live.length} live deliveries`,
      );
      await feed.close();
      await first.stop();
      await second.stop();
    } finally {
      await ops.close();
    }
  }, 90_000);

  it("raises the replicas of an existing stream in place when its owner starts with more; messages and durable consumers follow", async () => {
    // The node the test before restarted may still be catching up; until then the API can
    // leave calls unanswered.
    await env.natsCluster!.settled();
    const single = await connect("cluster-test-r1", "ops", env.natsUrl, 1);
    const owner = await connect("cluster-test-pk", "pk", env.natsUrl, 3);
    try {
      await single.ensureStreams(["PK"]);
      const stream = single.names.stream("PK");
      expect((await single.jsm.streams.info(stream)).config.num_replicas).toBe(1);
      for (let n = 0; n < 5; n++)
        await single.js.publish(single.names.subject(`pk.scale.${n}`), new Uint8Array([n]));
      await single.jsm.consumers.add(stream, {
        durable_name: "scale-test",
        ack_policy: AckPolicy.Explicit,
        num_replicas: followStreamReplicas,
      });

      await owner.ensureStreams(["PK"]);
      const scaled = await owner.jsm.streams.info(stream);
      expect(scaled.config.num_replicas).toBe(3);
      expect(scaled.state.messages).toBe(5);
      await waitFor(
        async () => (await single.jsm.consumers.info(stream, "scale-test")).cluster?.replicas?.length === 2,
        {
          what: "the durable consumer to follow its stream to three replicas",
        },
      );
      expect(await owner.streamReplicas(stream)).toBe(3);
    } finally {
      await single.close();
      await owner.close();
    }
  });

  it("refuses a route connection without the routes' password", async () => {
    const node = env.natsCluster!.nodes.find((candidate) => candidate.running)!;
    const answer = await new Promise<string>((resolve, reject) => {
      const socket = net.connect(node.routePort, "127.0.0.1");
      let received = "";
      let connectSent = false;
      socket.on("data", (chunk) => {
        received += chunk.toString();
        if (!connectSent && received.startsWith("INFO")) {
          connectSent = true;
          socket.write('CONNECT {"verbose":false,"pedantic":false,"name":"intruder"}\r\nPING\r\n');
        }
        if (received.includes("-ERR")) {
          socket.destroy();
          resolve(received.slice(received.indexOf("-ERR")));
        }
      });
      socket.on("error", reject);
      socket.on("close", () => resolve(received));
    });
    expect(answer).toMatch(/-ERR 'Authorization Violation'/);
  });
});
