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
import { type MsgHdrs, nanos, headers as natsHeaders } from "@nats-io/nats-core";
import { requireRole } from "@ovation/auth";
import { type DlqEntry, DlqEntrySchema, type DlqService } from "@ovation/proto/gen/ovation/dlq/v1/dlq_pb.ts";
import { deadLettersMoved } from "@ovation/server";
import type { Logger } from "pino";
import { type EventBus, isNotFound, jetStreamTimeoutMs } from "./bus.ts";
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
    try {
      await bus.jsm.consumers.info(stream, dlqMoverName);
    } catch (error) {
      if (!isNotFound(error)) throw error;
      await bus.jsm.consumers.add(stream, {
        durable_name: dlqMoverName,
        ack_policy: AckPolicy.Explicit,
        deliver_policy: DeliverPolicy.All,
        ack_wait: nanos(moverAckWaitMs),
        // The mover retries transient failures for as long as they last.
        max_deliver: -1,
        max_ack_pending: moverPendingMax * 4,
      });
    }
    const consumer = await bus.js.consumers.get(stream, dlqMoverName);
    this.#messages = await consumer.consume({
      max_messages: moverPendingMax,
      callback: (message) => {
        this.#work = this.#work.then(() => this.#move(message));
      },
    });
  }

  async stop(): Promise<void> {
    await this.#messages?.close();
    await this.#work;
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

export class DlqAdmin {
  readonly bus: EventBus;

  constructor(bus: EventBus) {
    this.bus = bus;
  }

  get #stream(): string {
    return this.bus.names.stream(dlqStream);
  }

  async list(pageSize: number, pageToken: string): Promise<{ entries: DlqEntry[]; nextPageToken: string }> {
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
    return this.#entry(await this.#stored(id), true);
  }

  /** Publishes the original event again on its subject, with its headers, and removes the entry. */
  async replay(id: bigint): Promise<bigint> {
    const stored = await this.#stored(id);
    const entry = this.#entry(stored, true);
    if (entry.subject === "")
      throw new ConnectError(`DLQ entry ${id} has no original to replay`, Code.FailedPrecondition);
    const headers = natsHeaders();
    for (const [key, values] of stored.header ?? []) {
      if (!key.startsWith("Ovation-Dlq-")) for (const value of values) headers.append(key, value);
    }
    const ack = await this.bus.js.publish(this.bus.names.subject(entry.subject), entry.payload, {
      msgID: `replay-${this.#stream}-${entry.id}`,
      headers,
    });
    await this.bus.jsm.streams.deleteMessage(this.#stream, Number(id));
    return BigInt(ack.seq);
  }

  async discard(id: bigint): Promise<void> {
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
