// Dead letters. The DLQ stream captures the server's advisories (max deliveries reached,
// message terminated) for every domain stream, so none is lost while no process listens.
// Each consumer runs a DlqMover: a durable consumer on the advisories about itself that copies
// the original message, with its reason, into a DLQ entry on "dlq.<consumer>". DlqAdmin lists,
// inspects, replays and discards entries; replay republishes on the original subject, and
// consumers that processed the event before skip it through their inbox.
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
import { nanos, headers as natsHeaders } from "@nats-io/nats-core";
import { requireRole } from "@ovation/auth";
import type { Database } from "@ovation/db";
import { type DlqEntry, DlqEntrySchema, type DlqService } from "@ovation/proto/gen/ovation/dlq/v1/dlq_pb.ts";
import type { Logger } from "pino";
import type { EventBus } from "./bus.ts";
import { dlqStream, headerNames } from "./names.ts";

/** Advisory kinds that mean a consumer gave up on a message. */
const deadLetterAdvisories = new Set(["MAX_DELIVERIES", "MSG_TERMINATED"]);

interface Advisory {
  stream: string;
  consumer: string;
  stream_seq: number;
  deliveries?: number;
}

export interface DlqMoverOptions {
  bus: EventBus;
  orm: Database;
  logger: Logger;
  /** Full (prefixed) stream name and durable consumer name being watched. */
  stream: string;
  consumer: string;
}

export class DlqMover {
  readonly #options: DlqMoverOptions;
  #messages: ConsumerMessages | undefined;
  #work: Promise<void> = Promise.resolve();

  constructor(options: DlqMoverOptions) {
    this.#options = options;
  }

  get #name(): string {
    return `dlq-${this.#options.consumer}`;
  }

  async start(): Promise<void> {
    const { bus } = this.#options;
    const dlq = bus.names.stream(dlqStream);
    const filter = bus.names.consumerAdvisories(this.#options.stream, this.#options.consumer);
    try {
      await bus.jsm.consumers.info(dlq, this.#name);
    } catch {
      await bus.jsm.consumers.add(dlq, {
        durable_name: this.#name,
        filter_subject: filter,
        ack_policy: AckPolicy.Explicit,
        deliver_policy: DeliverPolicy.All,
        ack_wait: nanos(30_000),
        max_deliver: 10,
      });
    }
    const consumer = await bus.js.consumers.get(dlq, this.#name);
    this.#messages = await consumer.consume({
      max_messages: 16,
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
    if (!deadLetterAdvisories.has(kind)) return advisoryMessage.ack();
    try {
      const advisory = advisoryMessage.json<Advisory>();
      const reason = (await this.#reason(advisory.stream_seq)) ?? defaultReason(kind);
      await this.deadLetter(advisory.stream_seq, advisory.deliveries ?? 0, reason);
      advisoryMessage.ack();
    } catch (error) {
      this.#options.logger.error({ err: error }, "could not move a dead letter, will retry");
      advisoryMessage.nak(1_000);
    }
  }

  /**
   * Copies message `streamSequence` of the watched stream into a DLQ entry. Idempotent: the
   * entry's message id is derived from stream, consumer and sequence.
   */
  async deadLetter(streamSequence: number, deliveries: number, reason: string): Promise<void> {
    const { bus, logger, stream, consumer } = this.#options;
    const original = await bus.jsm.streams.getMessage(stream, { seq: streamSequence }).catch(() => null);
    const headers = headerSetter();
    headers.set(headerNames.eventId, original?.header.get(headerNames.eventId) ?? "");
    headers.set(headerNames.eventType, original?.header.get(headerNames.eventType) ?? "");
    headers.set(headerNames.dlqStream, stream);
    headers.set(headerNames.dlqConsumer, consumer);
    headers.set(headerNames.dlqStreamSequence, String(streamSequence));
    headers.set(headerNames.dlqSubject, original ? bus.names.unprefixed(original.subject) : "");
    headers.set(headerNames.dlqDeliveries, String(deliveries));
    headers.set(
      headerNames.dlqReason,
      original ? reason : `${reason} (original message no longer in the stream)`,
    );
    headers.set(headerNames.dlqDeadAt, new Date().toISOString());
    await bus.js.publish(bus.names.dlqEntrySubject(consumer), original?.data ?? new Uint8Array(), {
      msgID: `dlq-${stream}-${consumer}-${streamSequence}`,
      headers,
    });
    logger.warn({ consumer, streamSequence, reason }, "moved to DLQ");
  }

  async #reason(streamSequence: number): Promise<string | undefined> {
    const rows = await this.#options.orm.em
      .fork()
      .execute<{ reason: string; deliveries: number }[]>(
        "select reason, deliveries from consumer_failures where consumer = ? and stream_sequence = ?",
        [this.#options.consumer, streamSequence],
      );
    return rows[0]?.reason;
  }
}

const headerValueMaxLength = 1_000;

/**
 * NATS header values cannot hold line breaks, and database errors often do ("… - hint: …"):
 * fold them to spaces and bound the length, so a reason can never keep a dead letter stuck.
 */
export function headerValue(value: string): string {
  return value.replace(/\s*[\r\n]+\s*/g, " ").slice(0, headerValueMaxLength);
}

function headerSetter() {
  const headers = natsHeaders();
  const set = headers.set.bind(headers);
  headers.set = (key: string, value: string) => set(key, headerValue(value));
  return headers;
}

function defaultReason(kind: string): string {
  return kind === "MSG_TERMINATED"
    ? "terminated by the consumer"
    : "max deliveries reached without a recorded error (ack timeout or crash)";
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
    let sequence = pageToken === "" ? 1 : Number(pageToken);
    if (!Number.isSafeInteger(sequence) || sequence < 1)
      throw new ConnectError("bad page_token", Code.InvalidArgument);
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

  /** Publishes the original event again on its subject and removes the entry. */
  async replay(id: bigint): Promise<bigint> {
    const stored = await this.#stored(id);
    const entry = this.#entry(stored, true);
    const headers = natsHeaders();
    headers.set(headerNames.eventId, entry.eventId);
    headers.set(headerNames.eventType, entry.eventType);
    const ack = await this.bus.js.publish(this.bus.names.subject(entry.subject), entry.payload, {
      msgID: `replay-${entry.stream}-${entry.id}`,
      headers,
    });
    await this.bus.jsm.streams.deleteMessage(this.#stream, Number(id));
    return BigInt(ack.seq);
  }

  async discard(id: bigint): Promise<void> {
    await this.#stored(id);
    await this.bus.jsm.streams.deleteMessage(this.#stream, Number(id));
  }

  async #next(sequence: number): Promise<StoredMsg | null> {
    try {
      // next_by_subj is served by nats-server ≥ 2.9 on the message-get API.
      const query = { seq: sequence, next_by_subj: this.bus.names.dlqEntrySubjects() } as unknown as {
        seq: number;
      };
      return await this.bus.jsm.streams.getMessage(this.#stream, query);
    } catch (error) {
      if (error instanceof Error && /no message found/i.test(error.message)) return null;
      throw error;
    }
  }

  async #stored(id: bigint): Promise<StoredMsg> {
    const notFound = () => new ConnectError(`no DLQ entry ${id}`, Code.NotFound);
    if (id < 1n || id > BigInt(Number.MAX_SAFE_INTEGER)) throw notFound();
    const stored = await this.bus.jsm.streams.getMessage(this.#stream, { seq: Number(id) }).catch(() => null);
    const entryPrefix = this.bus.names.dlqEntrySubjects().slice(0, -1);
    if (stored === null || !stored.subject.startsWith(entryPrefix)) throw notFound();
    return stored;
  }

  #entry(stored: StoredMsg, withPayload: boolean): DlqEntry {
    const header = (name: string) => stored.header.get(name) ?? "";
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
      deadTime: timestampFromDate(new Date(header(headerNames.dlqDeadAt) || stored.time)),
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
