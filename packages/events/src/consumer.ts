// Durable pull consumers with effectively-once processing.
//
// JetStream delivers at least once. Every batch runs in one database transaction that first
// records the event ids in the inbox (insert … on conflict do nothing) and hands only the new
// ones to the handler, so a redelivered event changes nothing. A batch that fails is retried
// message by message, so one poison message cannot hold back the others; a failing message is
// nak'ed with exponential backoff (consumer `backoff` alone only applies to ack timeouts on
// nats-server 2.9) and after max_deliver attempts the server's max-deliveries advisory sends it
// to the DLQ (see dlq.ts). A payload that cannot even be decoded is terminated at once.
import { type DescMessage, fromBinary, type MessageShape } from "@bufbuild/protobuf";
import { AckPolicy, type ConsumerMessages, DeliverPolicy, type JsMsg } from "@nats-io/jetstream";
import { nanos } from "@nats-io/nats-core";
import type { Database, EntityManager } from "@ovation/db";
import { eventsProcessed, withTrace } from "@ovation/server";
import type { Logger } from "pino";
import { type EventBus, isNotFound, streamLimits } from "./bus.ts";
import { DlqMover } from "./dlq.ts";
import { headerNames } from "./names.ts";

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
}

export interface ConsumerSpec<Desc extends DescMessage> {
  /** Durable consumer name, for example "wallet-host-credit". */
  name: string;
  /** Stream, unprefixed, for example "GIFT". */
  stream: string;
  /** Subject filter, unprefixed, for example "gift.gift.sent". */
  subject: string;
  schema: Desc;
  /** Applies a batch of new events inside the transaction `em`. Throwing rolls the batch back. */
  handle: (em: EntityManager, events: ReceivedEvent<MessageShape<Desc>>[]) => Promise<void>;
  /** Events per transaction, 1..1000. */
  batchMax?: number;
  /** Deliveries before the DLQ: 4 = the first try and 3 retries. */
  maxDeliver?: number;
  /** Delay before each retry after a failure, one entry per retry. */
  retryBackoffMs?: number[];
  /** How long a delivery may stay unacknowledged (a crashed worker) before redelivery. */
  ackWaitMs?: number;
}

export const consumerDefaults = {
  batchMax: 256,
  maxDeliver: 4,
  retryBackoffMs: [1_000, 4_000, 16_000],
  ackWaitMs: 30_000,
} as const;

const consumerLimits = { batchMax: 1_000, maxDeliverMax: 20, ackWaitMinMs: 100 } as const;
const maxAckPending = 2_000;
/**
 * How long a consumer remembers what it processed (inbox) and why deliveries failed. An event
 * can come back as long as it is in its stream, and a DLQ entry can be replayed to every
 * consumer of the subject as long as it is in the DLQ: two stream lifetimes cover both.
 */
export const inboxRetentionMs = 2 * streamLimits.maxAgeMs;
const pruneIntervalMs = 3_600_000;
/** Rows deleted per statement, so pruning never holds long locks. */
const pruneChunk = 5_000;

type ParsedSpec<Desc extends DescMessage> = Required<ConsumerSpec<Desc>>;

/** Validates and completes a consumer spec; errors name the property. */
export function parseConsumerSpec<Desc extends DescMessage>(spec: ConsumerSpec<Desc>): ParsedSpec<Desc> {
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
  if (parsed.maxDeliver < 2 || parsed.maxDeliver > consumerLimits.maxDeliverMax) {
    fail("maxDeliver", `must be 2..${consumerLimits.maxDeliverMax}`);
  }
  if (parsed.retryBackoffMs.length !== parsed.maxDeliver - 1)
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

export class ConsumerRunner<Desc extends DescMessage> {
  readonly spec: ParsedSpec<Desc>;
  readonly #options: ConsumerRunnerOptions;
  readonly #log: Logger;
  #messages: ConsumerMessages | undefined;
  #pending: JsMsg[] = [];
  #processing: Promise<void> | undefined;
  #dlqMover: DlqMover;
  #pruneTimer: NodeJS.Timeout | undefined;

  constructor(spec: ConsumerSpec<Desc>, options: ConsumerRunnerOptions) {
    this.spec = parseConsumerSpec(spec);
    this.#options = options;
    this.#log = options.logger.child({ consumer: this.spec.name });
    this.#dlqMover = new DlqMover({ ...options, stream: this.streamName, consumer: this.spec.name });
  }

  get streamName(): string {
    return this.#options.bus.names.stream(this.spec.stream);
  }

  async start(): Promise<void> {
    await this.#ensureConsumer();
    await this.#dlqMover.start();
    const consumer = await this.#options.bus.js.consumers.get(this.streamName, this.spec.name);
    this.#messages = await consumer.consume({
      max_messages: this.spec.batchMax * 2,
      callback: (message) => {
        this.#pending.push(message);
        this.#processing ??= this.#drain();
      },
    });
    this.#pruneTimer = setInterval(() => {
      this.prune().catch((error) => this.#log.warn({ err: error }, "inbox pruning failed"));
    }, pruneIntervalMs);
    this.#pruneTimer.unref();
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
   * another replica, instead of after the ack wait) and waits for the batch in progress.
   */
  async stop(): Promise<void> {
    clearInterval(this.#pruneTimer);
    await this.#messages?.close();
    for (const message of this.#pending.splice(0)) message.nak();
    await this.#processing;
    await this.#dlqMover.stop();
  }

  async #ensureConsumer(): Promise<void> {
    const { jsm, names } = this.#options.bus;
    const ackWait = this.spec.ackWaitMs;
    const config = {
      filter_subject: names.subject(this.spec.subject),
      ack_policy: AckPolicy.Explicit,
      max_deliver: this.spec.maxDeliver,
      ack_wait: nanos(ackWait),
      // Redelivery after an ack timeout (a crashed worker) backs off too; on 2.9 this list
      // must be shorter than max_deliver.
      backoff: this.spec.retryBackoffMs.map((_, retry) => nanos(ackWait * 2 ** retry)),
      max_ack_pending: maxAckPending,
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
      while (this.#pending.length > 0) {
        // Let the messages already read off the socket join this batch: the first message of
        // a backlog arrives alone, and a batch of one costs a transaction like a full one.
        await new Promise((resolve) => setImmediate(resolve));
        const batch = this.#pending.splice(0, this.spec.batchMax);
        await this.#processBatch(batch);
      }
    } finally {
      this.#processing = undefined;
    }
  }

  async #processBatch(batch: JsMsg[]): Promise<void> {
    const decoded: Array<{ raw: JsMsg; event: ReceivedEvent<MessageShape<Desc>> }> = [];
    for (const raw of batch) {
      const event = this.#decode(raw);
      if (event !== undefined) decoded.push({ raw, event });
    }
    if (decoded.length === 0) return;
    const started = performance.now();
    try {
      await this.#apply(decoded.map((d) => d.event));
      for (const { raw } of decoded) raw.ack();
      eventsProcessed.inc({ consumer: this.spec.name, outcome: "processed" }, decoded.length);
      this.#log.debug({ size: decoded.length, ms: Math.round(performance.now() - started) }, "batch applied");
    } catch (error) {
      if (decoded.length === 1) return this.#failed(decoded[0]!.raw, decoded[0]!.event, error);
      this.#log.warn({ err: error, size: decoded.length }, "batch failed, retrying one by one");
      for (const { raw, event } of decoded) {
        try {
          await this.#apply([event]);
          raw.ack();
          eventsProcessed.inc({ consumer: this.spec.name, outcome: "processed" });
        } catch (single) {
          await this.#failed(raw, event, single);
        }
      }
    }
  }

  /**
   * Applies events in one transaction with their inbox rows. It runs in the trace of the first
   * event, so what the handler publishes continues that trace (for a batch of one, exactly).
   */
  async #apply(events: ReceivedEvent<MessageShape<Desc>>[]): Promise<void> {
    await withTrace(events[0]?.traceparent, () => this.#applyInTrace(events));
  }

  async #applyInTrace(events: ReceivedEvent<MessageShape<Desc>>[]): Promise<void> {
    await this.#options.orm.em.fork().transactional(async (em) => {
      const fresh = await em.execute<{ event_id: string }[]>(
        `insert into inbox (consumer, event_id) select ?, value::uuid from jsonb_array_elements_text(?::jsonb)
         on conflict do nothing returning event_id`,
        [this.spec.name, JSON.stringify(events.map((e) => e.eventId))],
      );
      // Each new event once: two copies of one event (a replay, a duplicate producer) can
      // arrive in the same batch, and the inbox insert lets only the first through.
      const freshIds = new Set(fresh.map((row) => row.event_id));
      const todo = events.filter((e) => freshIds.delete(e.eventId));
      if (todo.length > 0) await this.spec.handle(em, todo);
    });
  }

  #decode(raw: JsMsg): ReceivedEvent<MessageShape<Desc>> | undefined {
    const eventId = raw.headers?.get(headerNames.eventId) ?? "";
    try {
      if (!/^[0-9a-f-]{36}$/i.test(eventId))
        throw new Error(`missing or invalid ${headerNames.eventId} header`);
      return {
        eventId,
        subject: this.#options.bus.names.unprefixed(raw.subject),
        message: fromBinary(this.spec.schema, raw.data),
        streamSequence: raw.seq,
        deliveryCount: raw.info.deliveryCount,
        publishedAt: new Date(raw.info.timestampNanos / 1e6),
        traceparent: raw.headers?.get(headerNames.traceParent) || undefined,
      };
    } catch (error) {
      // Nothing a retry could fix: dead-letter it now and terminate it. nats-server 2.9 raises
      // no advisory for terminated messages; where a newer one does, the DLQ entry's message
      // id makes the mover's copy a duplicate that JetStream drops.
      const reason = `undecodable ${this.spec.schema.typeName}: ${(error as Error).message}`;
      this.#log.error({ streamSequence: raw.seq, reason }, "poison message terminated");
      eventsProcessed.inc({ consumer: this.spec.name, outcome: "undecodable" });
      void this.#dlqMover
        .deadLetter(raw.seq, raw.info.deliveryCount, reason)
        .then(() => raw.term(reason))
        .catch((dlqError) => {
          this.#log.error({ err: dlqError }, "could not dead-letter, will retry");
          raw.nak(this.spec.retryBackoffMs[0]);
        });
      return undefined;
    }
  }

  async #failed(raw: JsMsg, event: ReceivedEvent<MessageShape<Desc>>, error: unknown): Promise<void> {
    const reason = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
    const attempt = raw.info.deliveryCount;
    this.#log.warn({ eventId: event.eventId, attempt, reason }, "event failed");
    await this.#recordFailure(raw.seq, attempt, reason).catch((recordError) =>
      this.#log.error({ err: recordError }, "could not record the failure reason"),
    );
    // After the last attempt a plain nak lets the server raise the max-deliveries advisory.
    const delay = this.spec.retryBackoffMs[attempt - 1];
    eventsProcessed.inc({ consumer: this.spec.name, outcome: delay === undefined ? "exhausted" : "retried" });
    if (delay === undefined) raw.nak();
    else raw.nak(delay);
  }

  async #recordFailure(streamSequence: number, deliveries: number, reason: string): Promise<void> {
    await this.#options.orm.em.fork().execute(
      `insert into consumer_failures (consumer, stream_sequence, deliveries, reason) values (?, ?, ?, ?)
       on conflict (consumer, stream_sequence) do update
       set deliveries = excluded.deliveries, reason = excluded.reason, failed_at = now()`,
      [this.spec.name, streamSequence, deliveries, reason.slice(0, 2_000)],
    );
  }
}
