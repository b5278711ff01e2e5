// The connection to NATS JetStream and the declarative stream specs every service ensures at
// start-up (idempotent: creating an existing stream with the same config is a no-op).
import {
  DiscardPolicy,
  type JetStreamClient,
  type JetStreamManager,
  jetstream,
  jetstreamManager,
  RetentionPolicy,
  StorageType,
  type StreamConfig,
} from "@nats-io/jetstream";
import { type NatsConnection, nanos } from "@nats-io/nats-core";
import { connect } from "@nats-io/transport-node";
import { type Domain, dlqStream, domains, Names } from "./names.ts";

/** Limits for every stream: events are kept a week, or until the stream reaches its byte limit. */
export const streamLimits = {
  maxAgeMs: 7 * 24 * 3600_000,
  /** Default byte limit per stream; JetStream reserves it up front, so keep it honest. */
  maxBytesDefault: 1024 ** 3,
  /** Nats-Msg-Id deduplication window: outbox republishes after a crash fall inside it. */
  duplicateWindowMs: 10 * 60_000,
  maxMessageBytes: 1024 * 1024,
} as const;

export interface EventBusOptions {
  url: string;
  prefix: string;
  /** Connection name shown by the server, for example "wallet". */
  name: string;
  /** Byte limit per stream (reserved by JetStream); tests use a small one. */
  streamMaxBytes?: number;
}

export class EventBus {
  readonly connection: NatsConnection;
  readonly js: JetStreamClient;
  readonly jsm: JetStreamManager;
  readonly names: Names;
  readonly #streamMaxBytes: number;

  private constructor(
    connection: NatsConnection,
    js: JetStreamClient,
    jsm: JetStreamManager,
    names: Names,
    streamMaxBytes: number,
  ) {
    this.connection = connection;
    this.js = js;
    this.jsm = jsm;
    this.names = names;
    this.#streamMaxBytes = streamMaxBytes;
  }

  static async connect(options: EventBusOptions): Promise<EventBus> {
    const connection = await connect({
      servers: options.url,
      name: options.name,
      maxReconnectAttempts: -1,
      reconnectTimeWait: 500,
      // nats.js otherwise builds an Error per request up front, only to give a timeout a
      // stack: on the relay's publish path that was a tenth of the wallet's CPU (profiled).
      noAsyncTraces: true,
    });
    const jsm = await jetstreamManager(connection, { timeout: 10_000 });
    return new EventBus(
      connection,
      jetstream(connection, { timeout: 10_000 }),
      jsm,
      new Names(options.prefix),
      options.streamMaxBytes ?? streamLimits.maxBytesDefault,
    );
  }

  /** Creates (or updates) the domain streams and the DLQ stream. */
  async ensureStreams(which: readonly Domain[] = domains): Promise<void> {
    for (const domain of which) {
      await this.#ensure({
        name: this.names.stream(domain),
        subjects: this.names.domainSubjects(domain),
        retention: RetentionPolicy.Limits,
      });
    }
    // The DLQ keeps Limits retention so tools can browse it; it captures the advisories of
    // every domain stream, so none is lost while no process listens.
    await this.#ensure({
      name: this.names.stream(dlqStream),
      subjects: [...this.names.advisorySubjects(), this.names.dlqEntrySubjects()],
      retention: RetentionPolicy.Limits,
    });
  }

  async #ensure(config: Pick<StreamConfig, "name" | "subjects" | "retention">): Promise<void> {
    const full: Partial<StreamConfig> & { name: string } = {
      ...config,
      storage: StorageType.File,
      discard: DiscardPolicy.Old,
      max_age: nanos(streamLimits.maxAgeMs),
      max_bytes: this.#streamMaxBytes,
      max_msg_size: streamLimits.maxMessageBytes,
      duplicate_window: nanos(streamLimits.duplicateWindowMs),
      num_replicas: 1,
    };
    try {
      await this.jsm.streams.info(config.name);
      await this.jsm.streams.update(config.name, full);
    } catch (error) {
      if (!isNotFound(error)) throw error;
      await this.jsm.streams.add(full);
    }
  }

  async close(): Promise<void> {
    if (!this.connection.isClosed()) await this.connection.drain();
  }
}

export function isNotFound(error: unknown): boolean {
  return error instanceof Error && /not found/i.test(error.message);
}
