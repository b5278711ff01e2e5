// The connection to NATS JetStream, the declarative stream specs every service ensures at
// start-up (idempotent: creating an existing stream with the same config is a no-op), and the
// connection state the relay and consumers need to tell an outage from a bad message.
import {
  DiscardPolicy,
  JetStreamApiCodes,
  JetStreamApiError,
  type JetStreamClient,
  type JetStreamManager,
  jetstream,
  jetstreamManager,
  RetentionPolicy,
  StorageType,
  type StreamConfig,
  type StreamInfo,
} from "@nats-io/jetstream";
import { errors, type NatsConnection, nanos, nkeyAuthenticator } from "@nats-io/nats-core";
import { connect } from "@nats-io/transport-node";
import { natsServerList } from "@ovation/config";
import { advisoryStream, type Domain, dlqStream, domains, Names } from "./names.ts";
import { type BusIdentity, isBusIdentity, type StreamName, streamsOf } from "./permissions.ts";

/** Limits for every stream: events are kept a week, or until the stream reaches its byte limit. */
export const streamLimits = {
  maxAgeMs: 7 * 24 * 3600_000,
  /** Default byte limit per stream; JetStream reserves it up front, so keep it honest. */
  maxBytesDefault: 1024 ** 3,
  /** Nats-Msg-Id deduplication window: outbox republishes after a crash fall inside it. */
  duplicateWindowMs: 10 * 60_000,
  maxMessageBytes: 1024 * 1024,
  /**
   * Dead-letter advisories wait this long for a mover: two domain-stream lifetimes, after
   * which the message they point at is gone from its stream anyway.
   */
  advisoryMaxAgeMs: 14 * 24 * 3600_000,
} as const;

/** How long a JetStream publish or API call may wait for its answer. */
export const jetStreamTimeoutMs = 5_000;
/**
 * How long one pull request of a consumer lives on a cluster (NATS_REPLICAS above 1). The client
 * sends the next before it ends and declares it lost after two missed idle heartbeats (half of
 * this each): a pull held by a consumer leader that died (a node lost, a leader elected
 * elsewhere) is replaced about this long after, instead of after 30 s.
 */
export const clusterPullExpiresMs = 5_000;
/**
 * On one server there is no leader to move: a pull lives nats.js's default 30 s, and a server
 * that restarts is noticed by the connection, which pulls again on reconnecting. Idle, each
 * consumer then costs one small request and two heartbeats per 30 s, not per 5 s (decision 0035).
 */
export const serverPullExpiresMs = 30_000;
/**
 * `num_replicas` of a durable consumer: 0 is "as many as its stream", which also follows the
 * stream when its owner raises or lowers the stream's replicas (measured on nats-server 2.9.10;
 * an explicit count above the stream's is refused, error 10126).
 */
export const followStreamReplicas = 0;
/**
 * Pause between reconnect attempts while the server is away: a service is back within about
 * this long (plus jitter) after NATS returns. An attempt to a refused port is nearly free.
 */
const reconnectWaitMs = 250;
const reconnectJitterMs = 100;

export interface EventBusOptions {
  /** One server, or every server of a cluster, comma separated (NATS_URL). */
  url: string;
  prefix: string;
  /** Connection name shown by the server, for example "wallet". */
  name: string;
  /** Byte limit per stream (reserved by JetStream); tests use a small one. */
  streamMaxBytes?: number;
  /**
   * Who this process is on the bus (permissions.ts): its inbox prefix, the streams it creates
   * and updates, the consumers it may run. Without one it behaves like `ops` (tests of the
   * toolkit itself on an open server).
   */
  identity?: BusIdentity;
  /** The identity's nkey seed (SU…); without one the connection is anonymous. */
  nkeySeed?: Uint8Array | undefined;
  /** Replicas of the streams it creates or owns (NATS_REPLICAS): 1, or 3 on a cluster. */
  replicas?: number;
}

export class EventBus {
  readonly connection: NatsConnection;
  readonly js: JetStreamClient;
  readonly jsm: JetStreamManager;
  readonly names: Names;
  readonly identity: BusIdentity | undefined;
  readonly #streamMaxBytes: number;
  /** Replicas this process gives the streams it creates or owns. */
  readonly replicas: number;
  /** How long each pull request of this process's consumers lives (see clusterPullExpiresMs). */
  get pullExpiresMs(): number {
    return this.replicas > 1 ? clusterPullExpiresMs : serverPullExpiresMs;
  }
  /** Replicas each stream had when this process ensured or last looked it up, by full name. */
  readonly #streamReplicas = new Map<string, number>();
  #connected = true;
  readonly #reconnectListeners = new Set<() => void>();
  #waiters: (() => void)[] = [];

  private constructor(
    connection: NatsConnection,
    jsm: JetStreamManager,
    names: Names,
    options: EventBusOptions,
  ) {
    this.connection = connection;
    this.js = jetstream(connection, { timeout: jetStreamTimeoutMs });
    this.jsm = jsm;
    this.names = names;
    this.identity = options.identity;
    this.#streamMaxBytes = options.streamMaxBytes ?? streamLimits.maxBytesDefault;
    this.replicas = options.replicas ?? 1;
    void this.#watchStatus();
  }

  static async connect(options: EventBusOptions): Promise<EventBus> {
    if (options.identity !== undefined && !isBusIdentity(options.identity)) {
      throw new Error(
        `no bus permissions for identity ${options.identity}: add it to packages/events/src/permissions.ts`,
      );
    }
    const names = new Names(options.prefix);
    const connection = await connect({
      // Every server of a cluster: the client tries the others while one is away.
      servers: natsServerList(options.url),
      name: options.name,
      ...(options.nkeySeed === undefined ? {} : { authenticator: nkeyAuthenticator(options.nkeySeed) }),
      // Replies and pulled messages arrive below the identity's own inbox prefix, the only place
      // its permissions let it subscribe.
      ...(options.identity === undefined ? {} : { inboxPrefix: names.inboxPrefix(options.identity) }),
      maxReconnectAttempts: -1,
      reconnectTimeWait: reconnectWaitMs,
      reconnectJitter: reconnectJitterMs,
      // nats.js otherwise builds an Error per request up front, only to give a timeout a
      // stack: on the relay's publish path that was a tenth of the wallet's CPU (profiled).
      noAsyncTraces: true,
    }).catch((error: unknown) => {
      throw error instanceof errors.AuthorizationError ? refusedConnection(options, error) : error;
    });
    // It asks JetStream for the account first, which a cluster electing its metadata leader
    // does not answer: ask again, as every call of start-up does.
    const jsm = await untilAnswered(() =>
      jetstreamManager(connection, { timeout: jetStreamTimeoutMs }),
    ).catch(async (error: unknown) => {
      await connection.close();
      throw error;
    });
    return new EventBus(connection, jsm, names, options);
  }

  /** False while the connection to the server is lost (nats.js keeps reconnecting). */
  get connected(): boolean {
    return this.#connected && !this.connection.isClosed();
  }

  /** Resolves when connected (at once if already), or after `timeoutMs`, whichever is first. */
  whenConnected(timeoutMs: number): Promise<void> {
    if (this.connected) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(done, timeoutMs);
      const waiters = this.#waiters;
      function done() {
        clearTimeout(timer);
        resolve();
      }
      waiters.push(done);
    });
  }

  /** Calls `listener` after every reconnect; returns a function that removes it. */
  onReconnect(listener: () => void): () => void {
    this.#reconnectListeners.add(listener);
    return () => this.#reconnectListeners.delete(listener);
  }

  async #watchStatus(): Promise<void> {
    for await (const status of this.connection.status()) {
      if (status.type === "disconnect") this.#connected = false;
      else if (status.type === "reconnect") {
        this.#connected = true;
        for (const wake of this.#waiters.splice(0)) wake();
        for (const listener of this.#reconnectListeners) listener();
      }
    }
  }

  /**
   * Makes sure the streams this identity works with exist (of `which` domains, plus the
   * dead-letter and advisory streams): it creates a missing one, and updates the configuration
   * only of the streams it owns (permissions.ts), leaving the others as their owners set them.
   * Without an identity (or as `ops`) it creates or updates them all.
   */
  async ensureStreams(which: readonly Domain[] = domains): Promise<void> {
    const grant = this.identity === undefined ? undefined : streamsOf(this.identity);
    const mode = (stream: StreamName): "skip" | "create" | "own" => {
      if (grant === undefined) return "own";
      if (grant.owns.includes(stream)) return "own";
      return grant.touches.includes(stream) ? "create" : "skip";
    };
    for (const domain of which) {
      await this.#ensure(mode(domain), {
        name: this.names.stream(domain),
        subjects: this.names.domainSubjects(domain),
        max_age: nanos(streamLimits.maxAgeMs),
        discard: DiscardPolicy.Old,
      });
    }
    // A dead letter is never evicted or expired: no age limit, and when the stream is full a
    // new entry is refused (its mover retries) rather than an old one dropped.
    await this.#ensure(mode(dlqStream), {
      name: this.names.stream(dlqStream),
      subjects: [this.names.dlqEntrySubjects()],
      max_age: 0,
      discard: DiscardPolicy.New,
    });
    if (mode(dlqStream) === "own") await this.#removeLegacyMovers();
    await this.#ensure(mode(advisoryStream), {
      name: this.names.stream(advisoryStream),
      subjects: this.names.advisorySubjects(),
      max_age: nanos(streamLimits.advisoryMaxAgeMs),
      discard: DiscardPolicy.Old,
    });
  }

  /**
   * The first DLQ design ran one mover durable per consumer ("dlq-<consumer>") on the DLQ
   * stream, filtered on advisory subjects that stream no longer captures; the shared mover on
   * the advisory stream replaced them.
   */
  async #removeLegacyMovers(): Promise<void> {
    const stream = this.names.stream(dlqStream);
    for await (const consumer of this.jsm.consumers.list(stream)) {
      if (consumer.name.startsWith("dlq-")) await this.jsm.consumers.delete(stream, consumer.name);
    }
  }

  async #ensure(
    mode: "skip" | "create" | "own",
    config: Pick<StreamConfig, "name" | "subjects" | "max_age" | "discard">,
  ): Promise<void> {
    if (mode === "skip") return;
    const full: Partial<StreamConfig> & { name: string } = {
      ...config,
      retention: RetentionPolicy.Limits,
      storage: StorageType.File,
      max_bytes: this.#streamMaxBytes,
      max_msg_size: streamLimits.maxMessageBytes,
      duplicate_window: nanos(streamLimits.duplicateWindowMs),
      // The owner raises (or lowers) the replicas of a stream that has another count, which
      // JetStream does in place, keeping its messages; other processes leave it as it is.
      num_replicas: this.replicas,
    };
    try {
      const info = await untilAnswered(() => this.#createOrUpdate(mode, full));
      this.#streamReplicas.set(config.name, info.config.num_replicas);
    } catch (error) {
      throw isPlacementRefusal(error) ? unplacedReplicas(config.name, this.replicas, error) : error;
    }
  }

  async #createOrUpdate(
    mode: "create" | "own",
    config: Partial<StreamConfig> & { name: string },
  ): Promise<StreamInfo> {
    try {
      const info = await this.jsm.streams.info(config.name);
      return mode === "own" ? await this.jsm.streams.update(config.name, config) : info;
    } catch (error) {
      if (!isNotFound(error)) throw error;
      return this.jsm.streams.add(config).catch((addError: unknown) => {
        // Another process created it meanwhile (with its own settings): that one stands.
        if (!(addError instanceof JetStreamApiError && addError.code === streamNameInUse)) throw addError;
        return this.jsm.streams.info(config.name);
      });
    }
  }

  /**
   * The replicas of stream `stream` (full name), as this process last saw them: consumers that
   * cannot follow their stream's count by themselves (ephemeral ones) ask for as many.
   */
  async streamReplicas(stream: string): Promise<number> {
    const known = this.#streamReplicas.get(stream);
    if (known !== undefined) return known;
    const info = await this.jsm.streams.info(stream);
    this.#streamReplicas.set(stream, info.config.num_replicas);
    return info.config.num_replicas;
  }

  /**
   * Drains the connection: its subscriptions finish what they hold and its publishes are
   * flushed. A drain needs the server; while it is away (or lost mid-drain), there is nothing
   * to hand over, and the connection is closed instead.
   */
  async close(): Promise<void> {
    if (this.connection.isClosed()) return;
    if (this.connected) await this.connection.drain().catch(() => this.connection.close());
    else await this.connection.close();
  }

  /** `await using bus = await EventBus.connect(…)` closes it at the end of the block. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

/** The server refused who we are: say which credentials, and what to do about it. */
function refusedConnection(options: EventBusOptions, cause: Error): Error {
  const who =
    options.nkeySeed === undefined
      ? "an anonymous connection: give this process its nkey seed (NATS_NKEY_FILE, or OVATION_KEY_DIR)"
      : `the nkey of ${options.identity ?? "this process"}: the server was configured with another key set ` +
        "(render its configuration again from this one: ./ov keys generate, ./ov up)";
  return new Error(`NATS at ${options.url} refused ${who}`, { cause });
}

/**
 * How long start-up keeps asking JetStream what it does not answer in time: a cluster that has
 * just started is busy placing every stream and consumer of every replica, one Raft group at a
 * time (measured: 14 processes starting together on two cores waited over 5 s for one call),
 * and one still electing its leaders answers nothing.
 */
export const startupAnswerWaitMs = 60_000;
const startupRetryPauseMaxMs = 1_000;

/**
 * Runs `step` (idempotent JetStream API calls of start-up) again while NATS does not answer,
 * until `startupAnswerWaitMs` has passed; other errors, and the last outage, are thrown.
 */
export async function untilAnswered<T>(step: () => Promise<T>): Promise<T> {
  const deadline = Date.now() + startupAnswerWaitMs;
  for (let pauseMs = 100; ; pauseMs = Math.min(pauseMs * 2, startupRetryPauseMaxMs)) {
    try {
      return await step();
    } catch (error) {
      if (!isNatsOutage(error) || Date.now() + pauseMs > deadline) throw error;
    }
    await new Promise((resolve) => setTimeout(resolve, pauseMs));
  }
}

/** JetStream's "stream name already in use with a different configuration". */
const streamNameInUse = 10058;
/**
 * JetStream could not place the replicas asked for: "replicas > 1 not supported in
 * non-clustered mode" (10074), "insufficient resources" (10023), "no suitable peers for
 * placement" (10005).
 */
const placementRefusals = new Set([10074, 10023, 10005]);

const isPlacementRefusal = (error: unknown) =>
  error instanceof JetStreamApiError && placementRefusals.has(error.code);

/** Says which setting asked for replicas the servers cannot hold, and what to do. */
function unplacedReplicas(stream: string, replicas: number, cause: unknown): Error {
  return new Error(
    `JetStream cannot keep ${replicas} replicas of stream ${stream} (${(cause as Error).message}): ` +
      `NATS_REPLICAS=${replicas} needs a JetStream cluster of at least ${replicas} servers; ` +
      "use NATS_REPLICAS=1 with one nats-server",
    { cause },
  );
}

/** True when JetStream says the stream, consumer or message does not exist (by error code). */
export function isNotFound(error: unknown): boolean {
  return (
    error instanceof JetStreamApiError &&
    (error.code === JetStreamApiCodes.StreamNotFound ||
      error.code === JetStreamApiCodes.ConsumerNotFound ||
      error.code === JetStreamApiCodes.NoMessageFound)
  );
}

/**
 * True when NATS could not be reached or did not answer in time: retry later, and never count
 * it against a message. A JetStream API error (the server answered and refused) is not one.
 */
export function isNatsOutage(error: unknown): boolean {
  for (let link = error, depth = 0; link instanceof Error && depth < 8; depth++) {
    if (
      link instanceof errors.ClosedConnectionError ||
      link instanceof errors.ConnectionError ||
      link instanceof errors.DrainingConnectionError ||
      link instanceof errors.TimeoutError
    ) {
      return true;
    }
    // 503 from the JetStream API: the server answered, but JetStream itself is not available.
    if (link instanceof JetStreamApiError) return link.status === 503;
    link = link.cause;
  }
  return false;
}
