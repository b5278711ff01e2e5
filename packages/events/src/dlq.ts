// Dead letters. An entry holds the original payload and headers of a message a consumer gave
// up on, with the reason. Entries live in the DLQ stream, which keeps them until an operator
// replays or discards them: no age limit, and a full stream refuses new entries (whoever is
// writing retries) instead of evicting old ones.
//
// Two writers, one format (DeadLetters.write):
// - the consumer runner, when a handler kept failing while the infrastructure answered: it has
//   the message and the reason in hand (consumer.ts);
// - the DlqMover, for the server's dead-letter advisories: a message delivered max_deliver
//   times without any answer (the consumer crashed, hung or timed out on it each time). Every
//   service process runs one mover on the shared durable consumer "dlq-mover", so a consumer's
//   dead letters are moved even while its own process is down or after it was retired; the
//   advisories wait in their own stream while no mover runs.
// Each message has exactly one entry subject, so writing is idempotent for ever, not just inside
// the duplicate window.
//
// Replaying an entry asks the consumer that gave up on the message to process it again: a core
// NATS request on "dlq.replay.<consumer>", answered by one of its runners, which reads the
// original from its own stream by sequence and applies it through its inbox (consumer.ts). The
// admin never republishes anything, so it needs no right to publish other services' subjects,
// and an entry forged by a neighbour can only make a consumer re-read what its stream holds.
import { randomUUID } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import {
  AckPolicy,
  type ConsumerMessages,
  DeliverPolicy,
  type JsMsg,
  type StoredMsg,
} from "@nats-io/jetstream";
import { errors, type MsgHdrs, nanos, headers as natsHeaders } from "@nats-io/nats-core";
import { requireRole } from "@ovation/auth";
import { type DlqEntry, DlqEntrySchema, type DlqService } from "@ovation/proto/gen/ovation/dlq/v1/dlq_pb.ts";
import { deadLettersMoved } from "@ovation/server";
import type { Logger } from "pino";
import {
  type EventBus,
  followStreamReplicas,
  isNatsOutage,
  isNotFound,
  jetStreamTimeoutMs,
  untilAnswered,
} from "./bus.ts";
import { advisoryStream, dlqStream, headerNames } from "./names.ts";

/** The message a dead letter is about, as a consumer received it or as the stream stores it. */
export interface OriginalMessage {
  subject: string;
  data: Uint8Array;
  headers: MsgHdrs | undefined;
}

export interface DeadLetter {
  /** Full (prefixed) name of the stream the message is in. */
  stream: string;
  consumer: string;
  streamSequence: number;
  deliveries: number;
  reason: string;
  /** Undefined when JetStream says the message is no longer in its stream. */
  original: OriginalMessage | undefined;
  /** Who wrote it, for metrics: the consumer runner or the advisory mover. */
  by: "runner" | "mover";
}

const headerValueMaxLength = 1_000;

/**
 * NATS header values cannot hold line breaks, and database errors often do ("… - hint: …"):
 * fold them to spaces and bound the length, so a reason can never keep a dead letter stuck.
 */
export function headerValue(value: string): string {
  return value.replace(/\s*[\r\n]+\s*/g, " ").slice(0, headerValueMaxLength);
}

export class DeadLetters {
  readonly #bus: EventBus;

  constructor(bus: EventBus) {
    this.#bus = bus;
  }

  /** True when the message already has an entry (written before, by either writer). */
  async exists(stream: string, consumer: string, streamSequence: number): Promise<boolean> {
    const subject = this.#bus.names.dlqEntrySubject(stream, consumer, streamSequence);
    // null is JetStream's "no message found" (by its error code); other failures throw.
    const stored = await this.#bus.jsm.streams.getMessage(this.#bus.names.stream(dlqStream), {
      last_by_subj: subject,
    });
    return stored !== null;
  }

  /** Writes the entry unless it exists; returns false when it did. Throws when it cannot. */
  async write(letter: DeadLetter): Promise<boolean> {
    const { names, js } = this.#bus;
    if (await this.exists(letter.stream, letter.consumer, letter.streamSequence)) return false;
    const headers = natsHeaders();
    for (const [key, values] of letter.original?.headers ?? []) {
      // The server's own headers (Nats-Msg-Id …) belong to the original publish, not the entry.
      if (!key.toLowerCase().startsWith("nats-")) for (const value of values) headers.append(key, value);
    }
    const set = (key: string, value: string) => headers.set(key, headerValue(value));
    set(headerNames.dlqStream, letter.stream);
    set(headerNames.dlqConsumer, letter.consumer);
    set(headerNames.dlqStreamSequence, String(letter.streamSequence));
    set(headerNames.dlqSubject, letter.original ? names.unprefixed(letter.original.subject) : "");
    set(headerNames.dlqDeliveries, String(letter.deliveries));
    set(
      headerNames.dlqReason,
      letter.original ? letter.reason : `${letter.reason} (the original is no longer in its stream)`,
    );
    set(headerNames.dlqDeadAt, new Date().toISOString());
    await js.publish(
      names.dlqEntrySubject(letter.stream, letter.consumer, letter.streamSequence),
      letter.original?.data ?? new Uint8Array(),
      {
        msgID: `dlq-${letter.stream}-${letter.consumer}-${letter.streamSequence}`,
        headers,
        timeout: jetStreamTimeoutMs,
      },
    );
    deadLettersMoved.inc({ consumer: letter.consumer, by: letter.by });
    return true;
  }
}

interface Advisory {
  stream: string;
  consumer: string;
  stream_seq: number;
  deliveries?: number;
}

/** The shared durable consumer every mover pulls from; JetStream spreads advisories among them. */
export const dlqMoverName = "dlq-mover";
/** Delay before a mover tries an advisory again after a transient failure (no attempt limit). */
const moverRetryMs = 1_000;
const moverAckWaitMs = 30_000;
const moverPendingMax = 16;

export interface DlqMoverOptions {
  bus: EventBus;
  logger: Logger;
}

/** Turns the server's dead-letter advisories into DLQ entries; see the top of this file. */
export class DlqMover {
  readonly #options: DlqMoverOptions;
  readonly #deadLetters: DeadLetters;
  #messages: ConsumerMessages | undefined;
  #work: Promise<void> = Promise.resolve();

  constructor(options: DlqMoverOptions) {
    this.#options = options;
    this.#deadLetters = new DeadLetters(options.bus);
  }

  async start(): Promise<void> {
    const { bus } = this.#options;
    const stream = bus.names.stream(advisoryStream);
    const consumer = await untilAnswered(async () => {
      await this.#ensureConsumer(stream);
      return bus.js.consumers.get(stream, dlqMoverName);
    });
    this.#messages = await consumer.consume({
      max_messages: moverPendingMax,
      expires: bus.pullExpiresMs,
      callback: (message) => {
        this.#work = this.#work.then(() => this.#move(message));
      },
    });
  }

  async stop(): Promise<void> {
    await this.#messages?.close();
    await this.#work;
  }

  async #ensureConsumer(stream: string): Promise<void> {
    const { jsm } = this.#options.bus;
    try {
      await jsm.consumers.info(stream, dlqMoverName);
    } catch (error) {
      if (!isNotFound(error)) throw error;
      await jsm.consumers.add(stream, {
        durable_name: dlqMoverName,
        ack_policy: AckPolicy.Explicit,
        deliver_policy: DeliverPolicy.All,
        ack_wait: nanos(moverAckWaitMs),
        // The mover retries transient failures for as long as they last.
        max_deliver: -1,
        max_ack_pending: moverPendingMax * 4,
        num_replicas: followStreamReplicas,
      });
    }
  }

  async #move(advisoryMessage: JsMsg): Promise<void> {
    const kind = advisoryMessage.subject.split(".")[4] ?? "";
    try {
      const advisory = advisoryMessage.json<Advisory>();
      const original = await this.#original(advisory);
      await this.#deadLetters.write({
        stream: advisory.stream,
        consumer: advisory.consumer,
        streamSequence: advisory.stream_seq,
        deliveries: advisory.deliveries ?? 0,
        reason: reasonOf(kind, advisory),
        original,
        by: "mover",
      });
      advisoryMessage.ack();
    } catch (error) {
      this.#options.logger.warn(
        { err: error, advisory: advisoryMessage.subject },
        "could not move a dead letter; will retry",
      );
      advisoryMessage.nak(moverRetryMs);
    }
  }

  /**
   * The message the advisory is about; undefined only when JetStream says it is gone (the
   * client returns null for the "no message found" error code). Any other failure throws and
   * the advisory is tried again later.
   */
  async #original(advisory: Advisory): Promise<OriginalMessage | undefined> {
    const stored = await this.#options.bus.jsm.streams.getMessage(advisory.stream, {
      seq: advisory.stream_seq,
    });
    return stored === null
      ? undefined
      : { subject: stored.subject, data: stored.data, headers: stored.header };
  }
}

function reasonOf(kind: string, advisory: Advisory): string {
  return kind === "MSG_TERMINATED"
    ? `terminated by consumer ${advisory.consumer}`
    : `delivered ${advisory.deliveries ?? "too many"} times without an acknowledgement: the consumer crashed, hung or timed out on it every time`;
}

const dlqPageSizeDefault = 20;
const dlqPageSizeMax = 100;
/**
 * How long the admin waits for the consumer's answer to a replay: one transaction of one event,
 * which may call another service. Past it the event may still be applied; replaying again is
 * safe (the consumer's inbox applies it at most once).
 */
export const replayAnswerTimeoutMs = 10_000;

/** What the DLQ admin asks a consumer to replay: one message of its stream. */
export interface ReplayRequest {
  /** Full (prefixed) stream name, as the entry records it. */
  stream: string;
  streamSequence: number;
  /** The event id the entry recorded ("" when it had none): the stream must still hold it. */
  eventId: string;
  /** Deliveries before it died, so the replay is the next one. */
  deliveries: number;
}

/** The consumer's answer: applied (or had been already), or why not, as a Connect code name. */
export type ReplayAnswer =
  | { applied: { streamSequence: number; eventId: string } }
  | { error: { code: "failed_precondition" | "unavailable" | "invalid_argument"; message: string } };

const replayRequestBytesMax = 4_096;

/** Validates a replay request's JSON; throws with what is wrong. */
export function parseReplayRequest(data: Uint8Array): ReplayRequest {
  if (data.length > replayRequestBytesMax) throw new Error("replay request too large");
  const value = JSON.parse(new TextDecoder().decode(data)) as Partial<ReplayRequest>;
  const positive = (n: unknown) => typeof n === "number" && Number.isSafeInteger(n) && n >= 0;
  if (
    typeof value.stream !== "string" ||
    !positive(value.streamSequence) ||
    value.streamSequence === 0 ||
    typeof value.eventId !== "string" ||
    !positive(value.deliveries)
  ) {
    throw new Error("replay request needs stream, streamSequence ≥ 1, eventId and deliveries");
  }
  return value as ReplayRequest;
}

const answerCodes = {
  failed_precondition: Code.FailedPrecondition,
  unavailable: Code.Unavailable,
  invalid_argument: Code.InvalidArgument,
} as const;

const consumerNamePattern = /^[a-z0-9-]{1,64}$/;

export class DlqAdmin {
  readonly bus: EventBus;

  constructor(bus: EventBus) {
    this.bus = bus;
  }

  get #stream(): string {
    return this.bus.names.stream(dlqStream);
  }

  /**
   * While NATS is away, every call would wait for its JetStream timeout (5 s) and then fail:
   * answer UNAVAILABLE at once instead, so callers retry soon and nothing piles up.
   */
  #connected(): void {
    if (!this.bus.connected) throw new ConnectError("NATS is unavailable; retry", Code.Unavailable);
  }

  async list(pageSize: number, pageToken: string): Promise<{ entries: DlqEntry[]; nextPageToken: string }> {
    this.#connected();
    const size = pageSize === 0 ? dlqPageSizeDefault : Math.min(Math.max(pageSize, 1), dlqPageSizeMax);
    if (pageToken !== "" && !/^[1-9][0-9]{0,14}$/.test(pageToken))
      throw new ConnectError("invalid request: page_token: unknown cursor", Code.InvalidArgument);
    let sequence = pageToken === "" ? 1 : Number(pageToken);
    const entries: DlqEntry[] = [];
    while (entries.length < size) {
      const stored = await this.#next(sequence);
      if (stored === null) return { entries, nextPageToken: "" };
      entries.push(this.#entry(stored, false));
      sequence = stored.seq + 1;
    }
    const more = (await this.#next(sequence)) !== null;
    return { entries, nextPageToken: more ? String(sequence) : "" };
  }

  async get(id: bigint): Promise<DlqEntry> {
    this.#connected();
    return this.#entry(await this.#stored(id), true);
  }

  /**
   * Has the consumer that gave up on the message process it again (see the top of the file),
   * then removes the entry. Returns the message's sequence in its original stream. The entry
   * stays when the consumer fails again (FAILED_PRECONDITION with its reason), when the original
   * has left its stream (FAILED_PRECONDITION), or when no replica of the consumer runs
   * (UNAVAILABLE).
   */
  async replay(id: bigint): Promise<bigint> {
    this.#connected();
    const entry = this.#entry(await this.#stored(id), false);
    if (entry.subject === "" || entry.streamSequence === 0n) {
      throw new ConnectError(
        `DLQ entry ${id} has no original to replay: it was no longer in its stream when it died`,
        Code.FailedPrecondition,
      );
    }
    if (!consumerNamePattern.test(entry.consumer))
      throw new ConnectError(`DLQ entry ${id} names no valid consumer`, Code.FailedPrecondition);
    const answer = await this.#askConsumer(id, entry);
    if ("error" in answer) {
      throw new ConnectError(
        `DLQ entry ${id} stays: ${answer.error.message}`,
        answerCodes[answer.error.code] ?? Code.Internal,
      );
    }
    await this.bus.jsm.streams.deleteMessage(this.#stream, Number(id));
    return entry.streamSequence;
  }

  async #askConsumer(id: bigint, entry: DlqEntry): Promise<ReplayAnswer> {
    const request: ReplayRequest = {
      stream: entry.stream,
      streamSequence: Number(entry.streamSequence),
      eventId: entry.eventId,
      deliveries: entry.deliveries,
    };
    try {
      const reply = await this.bus.connection.request(
        this.bus.names.dlqReplaySubject(entry.consumer),
        JSON.stringify(request),
        {
          timeout: replayAnswerTimeoutMs,
          noMux: true,
          reply: this.bus.names.dlqReplayAnswerSubject(randomUUID()),
        },
      );
      return reply.json<ReplayAnswer>();
    } catch (error) {
      if (error instanceof errors.RequestError && error.isNoResponders()) {
        throw new ConnectError(
          `no replica of consumer ${entry.consumer} is running to replay DLQ entry ${id}: start its service, then replay again`,
          Code.Unavailable,
        );
      }
      if (error instanceof errors.TimeoutError) {
        throw new ConnectError(
          `consumer ${entry.consumer} did not answer within ${replayAnswerTimeoutMs / 1000} s; it may still apply the event, and replaying again is safe`,
          Code.DeadlineExceeded,
        );
      }
      if (isNatsOutage(error)) throw new ConnectError("NATS is unavailable; retry", Code.Unavailable);
      throw error;
    }
  }

  async discard(id: bigint): Promise<void> {
    this.#connected();
    await this.#stored(id);
    await this.bus.jsm.streams.deleteMessage(this.#stream, Number(id));
  }

  /** The first entry at or after `sequence`; null when there is none. */
  async #next(sequence: number): Promise<StoredMsg | null> {
    // next_by_subj is served by nats-server ≥ 2.9 on the message-get API.
    const query = { seq: sequence, next_by_subj: this.bus.names.dlqEntrySubjects() } as unknown as {
      seq: number;
    };
    return this.bus.jsm.streams.getMessage(this.#stream, query);
  }

  async #stored(id: bigint): Promise<StoredMsg> {
    const notFound = () => new ConnectError(`no DLQ entry ${id}`, Code.NotFound);
    if (id < 1n || id > BigInt(Number.MAX_SAFE_INTEGER)) throw notFound();
    const stored = await this.bus.jsm.streams.getMessage(this.#stream, { seq: Number(id) });
    if (stored === null || !stored.subject.startsWith(this.bus.names.dlqEntryPrefix())) throw notFound();
    return stored;
  }

  #entry(stored: StoredMsg, withPayload: boolean): DlqEntry {
    const header = (name: string) => stored.header.get(name) ?? "";
    const deadAt = new Date(header(headerNames.dlqDeadAt));
    return create(DlqEntrySchema, {
      id: BigInt(stored.seq),
      stream: header(headerNames.dlqStream),
      consumer: header(headerNames.dlqConsumer),
      streamSequence: BigInt(header(headerNames.dlqStreamSequence) || "0"),
      subject: header(headerNames.dlqSubject),
      eventId: header(headerNames.eventId),
      eventType: header(headerNames.eventType),
      deliveries: Number(header(headerNames.dlqDeliveries) || "0"),
      reason: header(headerNames.dlqReason),
      deadTime: timestampFromDate(Number.isNaN(deadAt.getTime()) ? stored.time : deadAt),
      payload: withPayload ? stored.data : new Uint8Array(),
    });
  }
}

/** Connect handlers for ovation.dlq.v1.DlqService; admin role only. */
export function dlqServiceImpl(admin: DlqAdmin): ServiceImpl<typeof DlqService> {
  return {
    async listDlqEntries(request, ctx) {
      requireRole(ctx, "admin");
      return admin.list(request.pageSize, request.pageToken);
    },
    async getDlqEntry(request, ctx) {
      requireRole(ctx, "admin");
      return { entry: await admin.get(request.id) };
    },
    async replayDlqEntry(request, ctx) {
      requireRole(ctx, "admin");
      return { replaySequence: await admin.replay(request.id) };
    },
    async discardDlqEntry(request, ctx) {
      requireRole(ctx, "admin");
      await admin.discard(request.id);
      return {};
    },
  };
}
