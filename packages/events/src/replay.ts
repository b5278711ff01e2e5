// Rebuilding a projection from its stream while its live consumer keeps running.
//
// 1. Fresh copies of the projection's tables (and of the inbox) are made in a staging schema.
// 2. An ordered consumer reads the stream from the start (or --from) and the projection's own
//    handler applies it to the copies: every transaction points `search_path` at the staging
//    schema first, so the handler's unqualified table names land there.
// 3. Once the copies have caught up, one transaction takes the projection's lock exclusively
//    (live batches hold it shared, so none is half applied), applies what arrived since, drops
//    the live tables, moves the copies in, adds the replayed event ids to the live inbox (so the
//    live consumer skips what the replay already applied and applies what came later) and lets
//    the projection settle timer work done meanwhile. Readers see the old tables or the new
//    ones, never a mix.
//
// The result equals what the live consumer built from the same events: the same handler, the
// same events in stream order, each once.
import type { DescMessage, MessageShape } from "@bufbuild/protobuf";
import { type Consumer, DeliverPolicy, type JsMsg } from "@nats-io/jetstream";
import { infrastructureConfigSchema, loadConfig, operatorSchema } from "@ovation/config";
import {
  type Database,
  type EntityManager,
  isInfrastructureError,
  nativePool,
  openDatabase,
} from "@ovation/db";
import { missingTable } from "@ovation/operator";
import { createLogger } from "@ovation/server";
import type { Logger } from "pino";
import { EventBus } from "./bus.ts";
import {
  applyNewEvents,
  type ConsumerSpec,
  decodeEvent,
  lockProjection,
  parseConsumerSpec,
  type ReceivedEvent,
} from "./consumer.ts";

/** Where a replay starts: a stream sequence, or the first event stored at or after a time. */
export type ReplayStart = { sequence: number } | { time: Date };

export interface ReplayOptions {
  bus: EventBus;
  orm: Database;
  logger: Logger;
  /** The service's schema, where the live tables are ("gift"). */
  schema: string;
  /** Default: the stream's first event. Events before it are not in the rebuilt projection. */
  from?: ReplayStart | undefined;
}

export interface ReplayResult {
  /** Events read from the stream. */
  events: number;
  /** Of those, new to the handler (a stream can hold one event twice). */
  applied: number;
  /** Refused by the handler (dead-lettered by the live consumer too), left out. */
  skipped: number;
  /** Read before the swap, and inside it (what arrived while the replay ran). */
  appliedAtSwap: number;
  ms: number;
}

/** How long the swap may wait for the lock behind live batches before the replay gives up. */
const swapLockTimeoutMs = 10_000;

/** Parses the CLI's --from: digits are a stream sequence, anything else a time (ISO 8601). */
export function parseReplayStart(text: string): ReplayStart {
  if (/^\d+$/.test(text)) {
    const sequence = Number(text);
    if (sequence < 1 || !Number.isSafeInteger(sequence)) throw new Error(`--from ${text}: not a sequence`);
    return { sequence };
  }
  const time = new Date(text);
  if (Number.isNaN(time.getTime()))
    throw new Error(`--from ${text}: neither a sequence nor an ISO 8601 time`);
  return { time };
}

export async function replayProjection<Desc extends DescMessage>(
  consumerSpec: ConsumerSpec<Desc>,
  options: ReplayOptions,
): Promise<ReplayResult> {
  const spec = parseConsumerSpec(consumerSpec);
  const projection = spec.projection;
  if (projection === undefined) throw new Error(`consumer ${spec.name} is not a replayable projection`);
  const { bus, orm, schema } = options;
  const log = options.logger.child({ replay: spec.name });
  const staging = `${schema}_replay_${spec.name.replaceAll("-", "_")}`;
  const started = performance.now();

  // One replay of a projection at a time: a session lock on a connection of our own.
  const guard = await (await nativePool(orm)).connect();
  try {
    const { rows } = await guard.query<{ locked: boolean }>(
      "select pg_try_advisory_lock(hashtext($1 || ':replay:' || $2)) as locked",
      [schema, spec.name],
    );
    if (!rows[0]!.locked) throw new Error(`a replay of ${spec.name} is already running`);

    await orm.em.fork().transactional(async (em) => {
      await em.execute(`drop schema if exists ${staging} cascade`);
      await em.execute(`create schema ${staging}`);
      for (const table of [...projection.tables, "inbox"])
        await em.execute(`create table ${staging}.${table} (like ${schema}.${table} including all)`);
    });

    const consumer = await bus.js.consumers.get(bus.names.stream(spec.stream), {
      filter_subjects: bus.names.subject(spec.subject),
      ...deliverFrom(options.from),
    });
    const read = { events: 0, applied: 0, skipped: 0 };
    /** One try of some events, undone alone (a savepoint) when it fails. */
    const attempt = async (em: EntityManager, events: ReceivedEvent<MessageShape<Desc>>[]) => {
      await em.execute("savepoint replay_attempt");
      try {
        let applied = 0;
        await applyNewEvents(em, spec.name, events, async (tx, fresh) => {
          applied = fresh.length;
          await spec.handle(tx, fresh, []);
        });
        await em.execute("release savepoint replay_attempt");
        read.applied += applied;
      } catch (error) {
        await em.execute("rollback to savepoint replay_attempt");
        throw error;
      }
    };
    // A batch that fails is tried event by event. An event the handler refuses is skipped, as
    // the live consumer dead-lettered it (and a DLQ replay can still bring it to the live
    // consumer: its id is not in the inbox). Infrastructure failures end the replay.
    const applyBatch = async (em: EntityManager, batch: ReceivedEvent<MessageShape<Desc>>[]) => {
      await em.execute(`set local search_path to ${staging}, ${schema}`);
      try {
        await attempt(em, batch);
      } catch (error) {
        if (isInfrastructureError(error)) throw error;
        for (const event of batch) {
          try {
            await attempt(em, [event]);
          } catch (single) {
            if (isInfrastructureError(single)) throw single;
            read.skipped += 1;
            log.warn(
              { err: single, streamSequence: event.streamSequence },
              "replay skips an event its handler refuses",
            );
          }
        }
      }
      await em.execute(`set local search_path to ${schema}`);
      read.events += batch.length;
    };

    // Catch up in transactions of a batch each, while the live consumer runs on.
    for (;;) {
      const batch = await nextBatch(consumer, spec.batchMax, spec.schema, bus, log);
      if (batch === undefined) break;
      await orm.em.fork().transactional((em) => applyBatch(em, batch));
    }
    log.info({ events: read.events, ms: Math.round(performance.now() - started) }, "replay caught up");

    const beforeSwap = read.applied;
    await orm.em.fork().transactional(async (em) => {
      await em.execute(`set local lock_timeout = ${swapLockTimeoutMs}`);
      await lockProjection(em, spec.name, "exclusive");
      for (;;) {
        const batch = await nextBatch(consumer, spec.batchMax, spec.schema, bus, log);
        if (batch === undefined) break;
        await applyBatch(em, batch);
      }
      for (const table of projection.tables) {
        await em.execute(`drop table ${schema}.${table}`);
        await em.execute(`alter table ${staging}.${table} set schema ${schema}`);
      }
      await em.execute(
        `insert into ${schema}.inbox (consumer, event_id, processed_at)
         select consumer, event_id, processed_at from ${staging}.inbox on conflict do nothing`,
      );
      await projection.settle?.(em);
      await em.execute(`drop schema ${staging} cascade`);
    });
    const result = {
      events: read.events,
      applied: read.applied,
      skipped: read.skipped,
      appliedAtSwap: read.applied - beforeSwap,
      ms: performance.now() - started,
    };
    log.info(result, "replay swapped in");
    return result;
  } catch (error) {
    await guard.query(`drop schema if exists ${staging} cascade`).catch(() => undefined);
    throw error;
  } finally {
    await guard.query("select pg_advisory_unlock_all()").catch(() => undefined);
    guard.release();
  }
}

function deliverFrom(from: ReplayStart | undefined) {
  if (from === undefined) return { deliver_policy: DeliverPolicy.All };
  if ("sequence" in from)
    return { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: from.sequence };
  return { deliver_policy: DeliverPolicy.StartTime, opt_start_time: from.time.toISOString() };
}

/**
 * The next events of the stream, up to `max`; undefined once none is pending. Messages that
 * do not decode are skipped: the live consumer dead-lettered them, so they are not in its
 * projection either.
 */
async function nextBatch<Desc extends DescMessage>(
  consumer: Consumer,
  max: number,
  schema: Desc,
  bus: EventBus,
  log: Logger,
): Promise<ReceivedEvent<MessageShape<Desc>>[] | undefined> {
  const pending = (await consumer.info(false)).num_pending;
  if (pending === 0) return undefined;
  const messages: JsMsg[] = [];
  for await (const message of await consumer.fetch({ max_messages: Math.min(pending, max), expires: 5_000 }))
    messages.push(message);
  const batch: ReceivedEvent<MessageShape<Desc>>[] = [];
  for (const message of messages) {
    try {
      batch.push(decodeEvent(message, schema, bus.names));
    } catch (error) {
      log.warn({ streamSequence: message.seq, err: error }, "replay skips an undecodable event");
    }
  }
  return batch;
}

export interface ReplayCliOptions {
  /** The service's schema, already migrated by the service. */
  schema: string;
  databaseUrl: string;
  natsUrl: string;
  prefix: string;
  /** The `ops` nkey seed (NATS_NKEY_FILE, or OVATION_KEY_DIR's nats/ops.nk): the CLI is an operator. */
  nkeySeed?: Uint8Array | undefined;
  logger: Logger;
  /** The service's replayable consumers, built on the database the CLI opened. */
  projections: (orm: Database) => readonly ConsumerSpec<DescMessage>[];
}

const replayUsage = "usage: replay CONSUMER [--from SEQUENCE|ISO_TIME]";

/**
 * `./ov replay CONSUMER [--from TIME|SEQ]`, run from a service's cli.ts: rebuilds one of its
 * projections while the service runs. Prints what it did; returns the exit code.
 */
export async function replayCli(args: readonly string[], options: ReplayCliOptions): Promise<number> {
  const [name, flag, value, ...rest] = args;
  let from: ReplayStart | undefined;
  try {
    if (
      name === undefined ||
      rest.length > 0 ||
      (flag !== undefined && (flag !== "--from" || value === undefined))
    )
      throw new Error(replayUsage);
    if (value !== undefined) from = parseReplayStart(value);
  } catch (error) {
    console.error((error as Error).message);
    return 2;
  }
  const orm = await openDatabase({
    url: options.databaseUrl,
    schema: options.schema,
    entities: [],
    migrations: [],
    migrate: false,
  });
  let bus: EventBus;
  try {
    bus = await EventBus.connect({
      url: options.natsUrl,
      prefix: options.prefix,
      name: `replay-${name}`,
      identity: "ops",
      nkeySeed: options.nkeySeed,
    });
  } catch (error) {
    await orm.close();
    console.error((error as Error).message);
    return 1;
  }
  try {
    const specs = options.projections(orm).filter((spec) => spec.projection !== undefined);
    const spec = specs.find((candidate) => candidate.name === name);
    if (spec === undefined) {
      console.error(`no replayable consumer ${name} here; there are: ${specs.map((s) => s.name).join(", ")}`);
      return 2;
    }
    const result = await replayProjection(spec, {
      bus,
      orm,
      logger: options.logger,
      schema: options.schema,
      from,
    });
    const rate = result.events / (result.ms / 1000);
    console.log(
      `replayed ${result.events} events of ${spec.stream} into ${name} (${result.applied} applied, ` +
        `${result.appliedAtSwap} of them at the swap, ${result.skipped} refused by the handler) in ${Math.round(result.ms)} ms, ${Math.round(rate)} events/s; swapped in`,
    );
    return 0;
  } finally {
    await bus.close();
    await orm.close();
  }
}

/**
 * A service's `cli.ts` for `./ov replay CONSUMER`: reads the operator's configuration (it
 * connects to NATS as `ops`: NATS_NKEY_FILE or OVATION_KEY_DIR), says in one line when the
 * service's tables are not there, and runs replayCli. Returns the exit code.
 */
export async function replayCommand(
  argv: readonly string[],
  service: {
    name: string;
    schema: string;
    usage: string;
    projections: ReplayCliOptions["projections"];
  },
): Promise<number> {
  const [command, ...args] = argv;
  const config = loadConfig(operatorSchema(infrastructureConfigSchema), process.env);
  if (command !== "replay") {
    console.error(service.usage);
    return 2;
  }
  // The replay's guard is a session advisory lock, which a transaction-mode pooler cannot hold:
  // an operator command of one connection goes to the database directly (0043).
  const databaseUrl = config.DATABASE_DIRECT_URL ?? config.DATABASE_URL;
  // A replay copies the projection's tables and the inbox: without them, one clear line.
  const problem = await missingTable(databaseUrl, service.schema, "inbox");
  if (problem !== undefined) {
    console.error(problem);
    return 1;
  }
  return replayCli(args, {
    schema: service.schema,
    databaseUrl,
    natsUrl: config.NATS_URL,
    prefix: config.OVATION_PREFIX,
    nkeySeed: config.NATS_NKEY_FILE?.seed,
    // Quiet unless asked: the command prints its own result.
    logger: createLogger(`${service.name}-cli`, process.env.LOG_LEVEL ?? "warn"),
    projections: service.projections,
  });
}
