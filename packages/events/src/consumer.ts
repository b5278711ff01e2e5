// Durable pull consumers with effectively-once processing.
//
// JetStream delivers at least once. Every batch runs in one database transaction that first
// records the event ids in the inbox (insert … on conflict do nothing) and hands only the new
// ones to the handler, so a redelivered event changes nothing. A consumer that calls other
// services does so in its `prepare` step, before the transaction opens, so no transaction is
// held open across a network call; the handler then records the answers in the transaction.
//
// Failures are told apart:
// - An outage (database or NATS unreachable, restarting, timing out; a called service
//   answering UNAVAILABLE or not before its deadline) is nobody's fault: the
//   runner pauses, holds the messages it has (working(), so the server neither redelivers them
//   nor counts a delivery) and tries the same batch again with a bounded backoff until the
//   infrastructure answers. A metric and a log line say it is paused.
// - A lost race (deadlock, serialization failure) is retried at once, a bounded number of times.
// - Anything else is the handler's failure. A failing batch is retried message by message, so
//   one poison message cannot hold back the others. Each failure of a message is counted in
//   consumer_failures with its reason; the message comes back after a growing delay (nak with
//   delay: consumer backoff alone only applies to ack timeouts on nats-server 2.9) and after
//   `attemptsMax` failures the runner writes its dead letter (dlq.ts) and terminates it.
// - A payload that cannot even be decoded is dead-lettered at once, and so is an event the
//   handler rejects (RejectedEventError: a money event with no fact behind it), with its reason.
// JetStream's own max_deliver is only a backstop for messages that never get an answer (the
// process crashes or hangs on them every time); the DlqMover moves those from the advisory.
//
// A dead letter is replayed by its own consumer: every runner answers the DLQ admin's requests
// for its name (a queue group, so one replica does it), reads the original from its own stream
// by sequence (the stored bytes, not the DLQ's copy) and applies it through the same inbox
// transaction as a delivery. So replaying needs no right to publish anyone's subjects.
import { type DescMessage, fromBinary, type MessageShape } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  AckPolicy,
  type ConsumerMessages,
  DeliverPolicy,
  type JsMsg,
  type StoredMsg,
} from "@nats-io/jetstream";
import { type Msg, type MsgHdrs, nanos, type Subscription } from "@nats-io/nats-core";
import { type Database, type EntityManager, isInfrastructureError, retryRaces } from "@ovation/db";
import { isDomainError } from "@ovation/errors";
import { consumerOutageRetries, consumerPaused, eventsProcessed, withTrace } from "@ovation/server";
import type { Logger } from "pino";
import {
  type EventBus,
  followStreamReplicas,
  isNatsOutage,
  isNotFound,
  streamLimits,
  untilAnswered,
} from "./bus.ts";
import { DeadLetters, parseReplayRequest, type ReplayAnswer, type ReplayRequest } from "./dlq.ts";
import { headerNames } from "./names.ts";
import { mayRunDurable, type StreamName } from "./permissions.ts";

/**
 * Thrown by a handler for an event that can never succeed however often it comes back: a money
 * event that does not check out against the ledger or its signature. The runner dead-letters it
 * at once with this message as the reason, without retries. In a batch, the batch is retried one
 * event at a time first, so only the rejected event is dead-lettered.
 */
export class RejectedEventError extends Error {
  override name = "RejectedEventError";
}

export interface ReceivedEvent<T> {
  eventId: string;
  subject: string;
  message: T;
  streamSequence: number;
  deliveryCount: number;
  /** When JetStream stored the event. */
  publishedAt: Date;
  /** The W3C trace context the event was published in, if any. */
  traceparent: string | undefined;
  /** The message's headers, for handlers that need more than the payload. */
  headers: ReadonlyMap<string, string>;
}

export interface ConsumerSpec<Desc extends DescMessage, Prepared = undefined> {
  /** Durable consumer name, for example "wallet-host-credit". */
  name: string;
  /** Stream, unprefixed, for example "GIFT". */
  stream: string;
  /** Subject filter, unprefixed, for example "gift.gift.sent". */
  subject: string;
  schema: Desc;
  /**
   * Applies a batch of new events inside the transaction `em`. Throwing rolls the batch back.
   * `prepared` holds what `prepare` answered for each event, in order (empty without it).
   * (A method, so a list of specs of different messages is a list of ConsumerSpec<DescMessage>.)
   */
  handle(em: EntityManager, events: ReceivedEvent<MessageShape<Desc>>[], prepared: Prepared[]): Promise<void>;
  /**
   * Calls other services for a batch before `handle`, outside any transaction: no database
   * transaction is ever held open across a network call. It sees only events the inbox has not
   * recorded yet, and answers one value per event, in order, which reaches `handle`. It must be
   * safe to call again with the same events (a batch that fails afterwards, a redelivery that
   * overtakes a commit): every call it makes carries a key derived from the event. A deadline
   * or UNAVAILABLE from the services it calls is an outage: the unknown outcome is resolved by
   * asking again with the same key, never by counting the event as failed.
   */
  prepare?(events: ReceivedEvent<MessageShape<Desc>>[]): Promise<Prepared[]>;
  /** Events per transaction, 1..1000. */
  batchMax?: number;
  /** Handler failures before the DLQ, outages not counted: 4 = the first try and 3 retries. */
  attemptsMax?: number;
  /** Delay before each retry after a handler failure, one entry per retry. */
  retryBackoffMs?: number[];
  /** How long a delivery may stay unacknowledged (a crashed worker) before redelivery. */
  ackWaitMs?: number;
  /** Set when the consumer's whole effect is a projection that a replay can rebuild. */
  projection?: ProjectionTables | undefined;
}

/**
 * The tables a projection owns, rebuilt by `replayProjection` (replay.ts). Its handler must
 * write them with raw SQL and unqualified names (a replay points `search_path` at fresh copies)
 * and must not call other services or publish events: a replay runs it again on old events.
 */
export interface ProjectionTables {
  tables: readonly string[];
  /**
   * Runs in the swap's transaction once the rebuilt tables are in place: catches up work that
   * timers did on the old tables while the replay ran (a boost that expired meanwhile).
   */
  settle?: (em: EntityManager) => Promise<void>;
}

/**
 * Serialises a projection's writers against its replay: every batch of its consumer (and any
 * job that writes its tables) holds this lock shared; the replay's swap holds it exclusively.
 */
export async function lockProjection(em: EntityManager, consumer: string, mode: "shared" | "exclusive") {
  const fn = mode === "shared" ? "pg_advisory_xact_lock_shared" : "pg_advisory_xact_lock";
  await em.execute(`select ${fn}(hashtext(current_schema() || ':projection:' || ?))`, [consumer]);
}

/**
 * Records the events in `consumer`'s inbox and hands the new ones to `handle`, in the caller's
 * transaction: what makes a consumer (and a replay) effectively-once.
 */
export async function applyNewEvents<T, P = undefined>(
  em: EntityManager,
  consumer: string,
  events: ReceivedEvent<T>[],
  handle: (em: EntityManager, events: ReceivedEvent<T>[], prepared: P[]) => Promise<void>,
  prepared?: ReadonlyMap<string, P>,
): Promise<void> {
  const fresh = await em.execute<{ event_id: string }[]>(
    `insert into inbox (consumer, event_id) select ?, value::uuid from jsonb_array_elements_text(?::jsonb)
     on conflict do nothing returning event_id`,
    [consumer, JSON.stringify(events.map((e) => e.eventId))],
  );
  // Each new event once: two copies of one event (a replay, a duplicate producer) can
  // arrive in the same batch, and the inbox insert lets only the first through.
  const freshIds = new Set(fresh.map((row) => row.event_id));
  const todo = events.filter((e) => freshIds.delete(e.eventId));
  if (todo.length === 0) return;
  await handle(em, todo, prepared === undefined ? [] : todo.map((event) => prepared.get(event.eventId) as P));
}

/** The events `consumer`'s inbox has not recorded yet: read outside any transaction. */
async function unprocessed<T>(
  em: EntityManager,
  consumer: string,
  events: ReceivedEvent<T>[],
): Promise<ReceivedEvent<T>[]> {
  // `= any(array)` on both columns of the key is one index probe per event, whatever the
  // statistics say; a join with a set of unknown size could be planned as a scan of every event
  // the consumer ever recorded (seen on a young inbox). Event ids are UUIDs: the literal needs
  // no quoting.
  const done = await em.execute<{ event_id: string }[]>(
    "select event_id from inbox where consumer = ? and event_id = any(?::uuid[])",
    [consumer, `{${events.map((e) => e.eventId).join(",")}}`],
  );
  const doneIds = new Set(done.map((row) => row.event_id));
  return events.filter((e) => !doneIds.has(e.eventId));
}

const eventIdPattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** A message as the stream holds it, delivered or read back by sequence. */
interface RawEvent {
  subject: string;
  data: Uint8Array;
  headers: MsgHdrs | undefined;
  streamSequence: number;
  deliveryCount: number;
  publishedAt: Date;
}

function decodeRaw<Desc extends DescMessage>(
  raw: RawEvent,
  schema: Desc,
  names: EventBus["names"],
): ReceivedEvent<MessageShape<Desc>> {
  const eventId = raw.headers?.get(headerNames.eventId) ?? "";
  if (!eventIdPattern.test(eventId)) throw new Error(`missing or invalid ${headerNames.eventId} header`);
  const headers = new Map<string, string>();
  for (const [key, values] of raw.headers ?? []) headers.set(key, values[0] ?? "");
  return {
    eventId,
    subject: names.unprefixed(raw.subject),
    message: fromBinary(schema, raw.data),
    streamSequence: raw.streamSequence,
    deliveryCount: raw.deliveryCount,
    publishedAt: raw.publishedAt,
    traceparent: raw.headers?.get(headerNames.traceParent) || undefined,
    headers,
  };
}

/** A delivered message as a ReceivedEvent; throws when it has no event id or does not decode. */
export function decodeEvent<Desc extends DescMessage>(
  raw: JsMsg,
  schema: Desc,
  names: EventBus["names"],
): ReceivedEvent<MessageShape<Desc>> {
  return decodeRaw(
    {
      subject: raw.subject,
      data: raw.data,
      headers: raw.headers,
      streamSequence: raw.seq,
      deliveryCount: raw.info.deliveryCount,
      publishedAt: new Date(raw.info.timestampNanos / 1e6),
    },
    schema,
    names,
  );
}

/** A message read back from its stream (a replay of a dead letter): one more delivery. */
function decodeStored<Desc extends DescMessage>(
  stored: StoredMsg,
  deliveries: number,
  schema: Desc,
  names: EventBus["names"],
): ReceivedEvent<MessageShape<Desc>> {
  return decodeRaw(
    {
      subject: stored.subject,
      data: stored.data,
      headers: stored.header,
      streamSequence: stored.seq,
      deliveryCount: deliveries + 1,
      publishedAt: stored.time,
    },
    schema,
    names,
  );
}

/** True when `subject` matches the NATS subject filter `filter` (`*` one token, `>` the rest). */
export function subjectMatches(filter: string, subject: string): boolean {
  const wanted = filter.split(".");
  const tokens = subject.split(".");
  for (let i = 0; i < wanted.length; i++) {
    if (wanted[i] === ">") return tokens.length > i;
    if (i >= tokens.length || (wanted[i] !== "*" && wanted[i] !== tokens[i])) return false;
  }
  return tokens.length === wanted.length;
}

export const consumerDefaults = {
  batchMax: 256,
  attemptsMax: 4,
  retryBackoffMs: [1_000, 4_000, 16_000],
  ackWaitMs: 30_000,
} as const;

const consumerLimits = { batchMax: 1_000, attemptsMax: 20, ackWaitMinMs: 100 } as const;

/**
 * Deliveries after which the server gives up on a message that was never answered (crash or
 * hang each time) and raises the max-deliveries advisory. Well above attemptsMax, so outages
 * and restarts, which also cost deliveries, never reach it on their own.
 */
export const serverDeliveriesMax = 10;
/** Messages delivered but not yet acknowledged, per consumer: what a pause can hold. */
const ackPendingPerBatch = 4;
/** Pause between tries of a batch during an outage, doubling up to the maximum. */
export const outageBackoff = { minMs: 100, maxMs: 1_000 } as const;
/**
 * How long a consumer remembers what it processed (inbox) and why deliveries failed. An event
 * can come back as long as it is in its stream, and a DLQ entry can be replayed to every
 * consumer of the subject as long as it is in the DLQ: two stream lifetimes cover both.
 */
export const inboxRetentionMs = 2 * streamLimits.maxAgeMs;
const pruneIntervalMs = 3_600_000;
/** Replay requests a runner holds at once; the admin replays one entry per call anyway. */
const replaysPendingMax = 16;
/** Rows deleted per statement, so pruning never holds long locks. */
const pruneChunk = 5_000;
const reasonMaxLength = 2_000;

type ParsedSpec<Desc extends DescMessage> = Required<Omit<ConsumerSpec<Desc, unknown>, "prepare">> &
  Pick<ConsumerSpec<Desc, unknown>, "prepare">;

/** Validates and completes a consumer spec; errors name the property. */
export function parseConsumerSpec<Desc extends DescMessage>(
  spec: ConsumerSpec<Desc, unknown>,
): ParsedSpec<Desc> {
  const parsed = { ...consumerDefaults, ...spec } as ParsedSpec<Desc>;
  const fail = (property: string, rule: string) => {
    throw new Error(`consumer ${spec.name}: ${property} ${rule}`);
  };
  if (!/^[a-z0-9-]{1,64}$/.test(parsed.name)) fail("name", "must be 1..64 of a-z, 0-9 and -");
  if (
    !Number.isInteger(parsed.batchMax) ||
    parsed.batchMax < 1 ||
    parsed.batchMax > consumerLimits.batchMax
  ) {
    fail("batchMax", `must be 1..${consumerLimits.batchMax}`);
  }
  if (parsed.attemptsMax < 1 || parsed.attemptsMax > consumerLimits.attemptsMax) {
    fail("attemptsMax", `must be 1..${consumerLimits.attemptsMax}`);
  }
  if (parsed.retryBackoffMs.length !== parsed.attemptsMax - 1)
    fail("retryBackoffMs", "needs one entry per retry");
  if (parsed.ackWaitMs < consumerLimits.ackWaitMinMs)
    fail("ackWaitMs", `must be ≥ ${consumerLimits.ackWaitMinMs}`);
  return parsed;
}

export interface ConsumerRunnerOptions {
  bus: EventBus;
  orm: Database;
  logger: Logger;
}

interface Delivery<T> {
  raw: JsMsg;
  event: ReceivedEvent<T>;
}

/**
 * True when the failure is the infrastructure's, not the message's: the database or NATS, or a
 * service the handler calls answering UNAVAILABLE (down, restarting, shedding load) or not
 * answering before its deadline.
 */
const isOutage = (error: unknown) =>
  isInfrastructureError(error) ||
  isNatsOutage(error) ||
  (isDomainError(error) && error.kind === "unavailable") ||
  (error instanceof ConnectError && outageCodes.has(error.code));

/**
 * A called service that is down or did not answer in time. A deadline is an unknown outcome,
 * not a failure of the event: the call is made again with the same key until it answers.
 */
const outageCodes = new Set([Code.Unavailable, Code.DeadlineExceeded]);

export class ConsumerRunner<Desc extends DescMessage> {
  readonly spec: ParsedSpec<Desc>;
  readonly #options: ConsumerRunnerOptions;
  readonly #log: Logger;
  readonly #deadLetters: DeadLetters;
  #messages: ConsumerMessages | undefined;
  #pending: JsMsg[] = [];
  /** The batch being applied, for holding it through an outage. */
  #inHand: JsMsg[] = [];
  #processing: Promise<void> | undefined;
  #pruneTimer: NodeJS.Timeout | undefined;
  #holdTimer: NodeJS.Timeout | undefined;
  #stopping = false;
  #replays: Subscription | undefined;
  #replaying: Promise<void> = Promise.resolve();
  #replaysPending = 0;

  constructor(spec: ConsumerSpec<Desc, unknown>, options: ConsumerRunnerOptions) {
    this.spec = parseConsumerSpec(spec);
    this.#options = options;
    this.#log = options.logger.child({ consumer: this.spec.name });
    this.#deadLetters = new DeadLetters(options.bus);
  }

  get streamName(): string {
    return this.#options.bus.names.stream(this.spec.stream);
  }

  async start(): Promise<void> {
    this.#stopping = false;
    const identity = this.#options.bus.identity;
    if (identity !== undefined && !mayRunDurable(identity, this.spec.stream as StreamName, this.spec.name)) {
      throw new Error(
        `consumer ${this.spec.name} on ${this.spec.stream} is not in ${identity}'s bus permissions: ` +
          "add it to busGrants in packages/events/src/permissions.ts",
      );
    }
    const consumer = await untilAnswered(async () => {
      await this.#ensureConsumer();
      return this.#options.bus.js.consumers.get(this.streamName, this.spec.name);
    });
    this.#messages = await consumer.consume({
      max_messages: this.spec.batchMax * 2,
      expires: this.#options.bus.pullExpiresMs,
      callback: (message) => {
        this.#pending.push(message);
        this.#processing ??= this.#drain();
      },
    });
    this.#pruneTimer = setInterval(() => {
      this.prune().catch((error) => this.#log.warn({ err: error }, "inbox pruning failed"));
    }, pruneIntervalMs);
    this.#pruneTimer.unref();
    this.#listenForReplays();
  }

  /** Forgets inbox rows and failure reasons older than `inboxRetentionMs`; returns how many. */
  async prune(now = new Date()): Promise<number> {
    const before = new Date(now.getTime() - inboxRetentionMs);
    let removed = 0;
    for (const [table, column] of [
      ["inbox", "processed_at"],
      ["consumer_failures", "failed_at"],
    ] as const) {
      for (;;) {
        const deleted = await this.#options.orm.em.fork().execute<{ n: number }[]>(
          `with gone as (delete from ${table} where ctid in (
             select ctid from ${table} where consumer = ? and ${column} < ? limit ${pruneChunk}) returning 1)
           select count(*)::int as n from gone`,
          [this.spec.name, before],
        );
        removed += deleted[0]!.n;
        if (deleted[0]!.n < pruneChunk) break;
      }
    }
    return removed;
  }

  /**
   * Stops fetching, hands back what was fetched but not started (nak: redelivered at once to
   * another replica, instead of after the ack wait) and waits for the batch in progress; a
   * batch waiting out an outage gives up at once and is handed back too.
   */
  async stop(): Promise<void> {
    this.#stopping = true;
    clearInterval(this.#pruneTimer);
    this.#replays?.unsubscribe();
    this.#replays = undefined;
    await this.#replaying;
    await this.#messages?.close();
    for (const message of this.#pending.splice(0)) message.nak();
    await this.#processing;
    this.#endHold();
  }

  /** Answers the DLQ admin's requests to process one of this consumer's dead letters again. */
  #listenForReplays(): void {
    const { connection, names } = this.#options.bus;
    this.#replays = connection.subscribe(names.dlqReplaySubject(this.spec.name), {
      queue: this.spec.name,
      callback: (error, message) => {
        if (error !== null) {
          this.#log.error({ err: error }, "replay requests can no longer be received");
          return;
        }
        if (this.#replaysPending >= replaysPendingMax) {
          this.#respond(message, {
            error: { code: "unavailable", message: `consumer ${this.spec.name} is busy replaying; retry` },
          });
          return;
        }
        this.#replaysPending++;
        this.#replaying = this.#replaying
          .then(() => this.#answerReplay(message))
          .finally(() => {
            this.#replaysPending--;
          });
      },
    });
  }

  async #answerReplay(message: Msg): Promise<void> {
    let answer: ReplayAnswer;
    try {
      answer = await this.#replay(parseReplayRequest(message.data));
    } catch (error) {
      answer = { error: { code: "invalid_argument", message: (error as Error).message } };
    }
    this.#respond(message, answer);
  }

  #respond(message: Msg, answer: ReplayAnswer): void {
    try {
      message.respond(JSON.stringify(answer));
    } catch (error) {
      this.#log.warn({ err: error }, "could not answer a replay request");
    }
  }

  /** Processes the original of a dead letter again, as a delivery would; see the top of the file. */
  async #replay(request: ReplayRequest): Promise<ReplayAnswer> {
    const where = `sequence ${request.streamSequence} of ${this.streamName}`;
    const refuse = (message: string): ReplayAnswer => ({ error: { code: "failed_precondition", message } });
    if (request.stream !== this.streamName)
      return refuse(
        `the entry is about ${request.stream}; consumer ${this.spec.name} reads ${this.streamName}`,
      );
    const { bus } = this.#options;
    let stored: StoredMsg | null;
    try {
      // null is JetStream's "no message found" (by its error code).
      stored = await bus.jsm.streams.getMessage(this.streamName, { seq: request.streamSequence });
    } catch (error) {
      if (isNatsOutage(error))
        return { error: { code: "unavailable", message: `NATS did not answer reading ${where}; retry` } };
      throw error;
    }
    if (stored === null) {
      return refuse(
        `the original (${where}) is no longer in its stream (it outlived the stream's limits or was removed): nothing to replay; discard the entry`,
      );
    }
    if (!subjectMatches(bus.names.subject(this.spec.subject), stored.subject))
      return refuse(`${where} is on ${stored.subject}, which consumer ${this.spec.name} does not read`);
    let event: ReceivedEvent<MessageShape<Desc>>;
    try {
      event = decodeStored(stored, request.deliveries, this.spec.schema, bus.names);
    } catch (error) {
      return refuse(`${where} cannot be decoded: ${(error as Error).message}`);
    }
    if (request.eventId !== "" && request.eventId !== event.eventId)
      return refuse(
        `${where} holds event ${event.eventId}, not ${request.eventId} (was the stream recreated?)`,
      );
    try {
      await retryRaces(() => this.#apply([event]));
    } catch (error) {
      if (isOutage(error))
        return { error: { code: "unavailable", message: `the infrastructure is unavailable; retry` } };
      const reason = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
      this.#log.warn({ eventId: event.eventId, reason }, "replayed event failed again");
      return refuse(
        `consumer ${this.spec.name} failed to apply it again: ${reason.slice(0, reasonMaxLength)}`,
      );
    }
    this.#log.info({ eventId: event.eventId, streamSequence: event.streamSequence }, "dead letter replayed");
    eventsProcessed.inc({ consumer: this.spec.name, outcome: "replayed" });
    return { applied: { streamSequence: event.streamSequence, eventId: event.eventId } };
  }

  async #ensureConsumer(): Promise<void> {
    const { jsm, names } = this.#options.bus;
    const ackWait = this.spec.ackWaitMs;
    const config = {
      filter_subject: names.subject(this.spec.subject),
      ack_policy: AckPolicy.Explicit,
      max_deliver: serverDeliveriesMax,
      ack_wait: nanos(ackWait),
      // No `backoff` list: on nats-server 2.9.10 it overrides nak(delay) from the second
      // redelivery on (measured: nak(100 ms) came back after 2.1 s and 6 s with backoff
      // [2 s, 4 s, 8 s]), and the retry delays are ours to choose. A crashed worker's messages
      // come back after ack_wait.
      backoff: [],
      max_ack_pending: this.spec.batchMax * ackPendingPerBatch,
      num_replicas: followStreamReplicas,
    };
    try {
      await jsm.consumers.info(this.streamName, this.spec.name);
      await jsm.consumers.update(this.streamName, this.spec.name, config);
    } catch (error) {
      if (!isNotFound(error)) throw error;
      await jsm.consumers.add(this.streamName, {
        ...config,
        durable_name: this.spec.name,
        deliver_policy: DeliverPolicy.All,
      });
    }
  }

  async #drain(): Promise<void> {
    try {
      while (this.#pending.length > 0 && !this.#stopping) {
        // Let the messages already read off the socket join this batch: the first message of
        // a backlog arrives alone, and a batch of one costs a transaction like a full one.
        await new Promise((resolve) => setImmediate(resolve));
        const batch = this.#pending.splice(0, this.spec.batchMax);
        this.#inHand = batch;
        await this.#processBatch(batch);
        this.#inHand = [];
      }
    } finally {
      this.#processing = undefined;
    }
  }

  async #processBatch(batch: JsMsg[]): Promise<void> {
    const decoded: Delivery<MessageShape<Desc>>[] = [];
    for (const raw of batch) {
      const event = this.#decode(raw);
      if (event !== undefined) decoded.push({ raw, event });
    }
    if (decoded.length === 0) return;
    const started = performance.now();
    const outcome = await this.#applyThroughOutages(decoded);
    if (outcome === "applied") {
      for (const { raw } of decoded) raw.ack();
      eventsProcessed.inc({ consumer: this.spec.name, outcome: "processed" }, decoded.length);
      this.#log.debug({ size: decoded.length, ms: Math.round(performance.now() - started) }, "batch applied");
      return;
    }
    if (outcome === "stopped") return this.#handBack(decoded);
    if (decoded.length === 1) return this.#failed(decoded[0]!, outcome.error);
    this.#log.warn({ err: outcome.error, size: decoded.length }, "batch failed, retrying one by one");
    for (const delivery of decoded) {
      const single = await this.#applyThroughOutages([delivery]);
      if (single === "applied") {
        delivery.raw.ack();
        eventsProcessed.inc({ consumer: this.spec.name, outcome: "processed" });
      } else if (single === "stopped") {
        this.#handBack([delivery]);
      } else {
        await this.#failed(delivery, single.error);
      }
    }
  }

  /**
   * Applies the deliveries, waiting out outages for as long as they last (until stop()).
   * Returns the handler's error when it fails while the infrastructure answers.
   */
  async #applyThroughOutages(
    deliveries: Delivery<MessageShape<Desc>>[],
  ): Promise<"applied" | "stopped" | { error: unknown }> {
    let backoffMs: number = outageBackoff.minMs;
    let paused = false;
    try {
      for (;;) {
        try {
          await retryRaces(() => this.#apply(deliveries.map((d) => d.event)));
          return "applied";
        } catch (error) {
          if (!isOutage(error)) return { error };
          if (!paused) {
            paused = true;
            this.#beginHold(error);
          }
          consumerOutageRetries.inc({ consumer: this.spec.name });
          if (this.#stopping) return "stopped";
          await new Promise((resolve) => setTimeout(resolve, backoffMs));
          backoffMs = Math.min(backoffMs * 2, outageBackoff.maxMs);
        }
      }
    } finally {
      if (paused) {
        this.#endHold();
        this.#log.info({ size: deliveries.length }, "consumer resumed: the infrastructure answers again");
      }
    }
  }

  /** While paused, tells the server every message in hand is still being worked on. */
  #beginHold(error: unknown): void {
    consumerPaused.set({ consumer: this.spec.name }, 1);
    this.#log.warn(
      { err: error },
      "consumer paused: database or NATS unavailable; retrying, no delivery spent",
    );
    const holdEveryMs = Math.max(this.spec.ackWaitMs / 3, 50);
    const hold = () => {
      for (const message of [...this.#inHand, ...this.#pending]) message.working();
    };
    hold();
    this.#holdTimer = setInterval(hold, holdEveryMs);
  }

  #endHold(): void {
    clearInterval(this.#holdTimer);
    this.#holdTimer = undefined;
    consumerPaused.set({ consumer: this.spec.name }, 0);
  }

  /** Stopping during an outage: the messages go back to the server for another replica. */
  #handBack(deliveries: Delivery<MessageShape<Desc>>[]): void {
    for (const { raw } of deliveries) raw.nak();
  }

  /**
   * Applies events in one transaction with their inbox rows. It runs in the trace of the first
   * event, so what the handler publishes continues that trace (for a batch of one, exactly).
   */
  async #apply(events: ReceivedEvent<MessageShape<Desc>>[]): Promise<void> {
    await withTrace(events[0]?.traceparent, () => this.#applyInTrace(events));
  }

  async #applyInTrace(events: ReceivedEvent<MessageShape<Desc>>[]): Promise<void> {
    const prepared = await this.#prepare(events);
    await this.#options.orm.em.fork().transactional(async (em) => {
      // First, so a replay's swap never finds this batch's inbox rows half written.
      if (this.spec.projection !== undefined) await lockProjection(em, this.spec.name, "shared");
      await applyNewEvents(em, this.spec.name, events, this.spec.handle, prepared);
    });
  }

  /**
   * Runs the spec's calls to other services for the events not yet processed, before the
   * transaction opens; by event id. An event processed meanwhile by another replica is
   * filtered out again by the inbox in the transaction, and its answer is unused.
   */
  async #prepare(events: ReceivedEvent<MessageShape<Desc>>[]): Promise<Map<string, unknown> | undefined> {
    const { prepare } = this.spec;
    if (prepare === undefined) return undefined;
    const todo = await unprocessed(this.#options.orm.em.fork(), this.spec.name, events);
    if (todo.length === 0) return new Map();
    const answers = await prepare(todo);
    if (answers.length !== todo.length)
      throw new Error(
        `consumer ${this.spec.name}: prepare answered ${answers.length} of ${todo.length} events`,
      );
    return new Map(todo.map((event, i) => [event.eventId, answers[i]]));
  }

  #decode(raw: JsMsg): ReceivedEvent<MessageShape<Desc>> | undefined {
    try {
      return decodeEvent(raw, this.spec.schema, this.#options.bus.names);
    } catch (error) {
      // Nothing a retry could fix: dead-letter it now.
      const reason = `undecodable ${this.spec.schema.typeName}: ${(error as Error).message}`;
      this.#log.error({ streamSequence: raw.seq, reason }, "poison message dead-lettered");
      eventsProcessed.inc({ consumer: this.spec.name, outcome: "undecodable" });
      void this.#deadLetter(raw, raw.info.deliveryCount, reason);
      return undefined;
    }
  }

  async #failed(delivery: Delivery<MessageShape<Desc>>, error: unknown): Promise<void> {
    const { raw, event } = delivery;
    const reason = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
    let attempts: number;
    try {
      attempts = await this.#recordFailure(raw.seq, raw.info.deliveryCount, reason);
    } catch (recordError) {
      // Not even the failure could be recorded: the database went away meanwhile. Try again
      // later; this delivery does not count as an attempt.
      this.#log.warn({ err: recordError }, "could not record a failure; retrying the message");
      raw.nak(outageBackoff.maxMs);
      return;
    }
    this.#log.warn({ eventId: event.eventId, attempts, reason }, "event failed");
    if (error instanceof RejectedEventError) {
      eventsProcessed.inc({ consumer: this.spec.name, outcome: "rejected" });
      await this.#deadLetter(raw, raw.info.deliveryCount, reason);
      return;
    }
    if (attempts < this.spec.attemptsMax) {
      eventsProcessed.inc({ consumer: this.spec.name, outcome: "retried" });
      raw.nak(this.spec.retryBackoffMs[attempts - 1]);
      return;
    }
    eventsProcessed.inc({ consumer: this.spec.name, outcome: "dead_lettered" });
    await this.#deadLetter(raw, raw.info.deliveryCount, `${reason} (after ${attempts} attempts)`);
  }

  /** Writes the dead letter, then terminates the message; on failure it comes back later. */
  async #deadLetter(raw: JsMsg, deliveries: number, reason: string): Promise<void> {
    try {
      await this.#deadLetters.write({
        stream: this.streamName,
        consumer: this.spec.name,
        streamSequence: raw.seq,
        deliveries,
        reason,
        original: { subject: raw.subject, data: raw.data, headers: raw.headers },
        by: "runner",
      });
      this.#log.warn({ streamSequence: raw.seq, reason }, "moved to DLQ");
      raw.term(reason.slice(0, 200));
    } catch (error) {
      this.#log.error({ err: error }, "could not write a dead letter; the message will come back");
      raw.nak(outageBackoff.maxMs);
    }
  }

  /** Counts one more handler failure of a message; returns its attempts so far. */
  async #recordFailure(streamSequence: number, deliveries: number, reason: string): Promise<number> {
    const rows = await this.#options.orm.em.fork().execute<{ attempts: number }[]>(
      `insert into consumer_failures (consumer, stream_sequence, deliveries, attempts, reason) values (?, ?, ?, 1, ?)
       on conflict (consumer, stream_sequence) do update
       set deliveries = excluded.deliveries, attempts = consumer_failures.attempts + 1,
           reason = excluded.reason, failed_at = now()
       returning attempts`,
      [this.spec.name, streamSequence, deliveries, reason.slice(0, reasonMaxLength)],
    );
    return rows[0]!.attempts;
  }
}
