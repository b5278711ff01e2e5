// Ephemeral consumers for per-replica fan-out (cache invalidation, WebSocket delivery): each
// process gets only messages published after it subscribed, acknowledges nothing, and the
// server deletes the consumer once the process has been away for `ephemeralInactiveMs`. nats.js
// 3 ordered consumers send `filter_subjects`, which nats-server 2.9 refuses, so this creates a
// plain one.
//
// They survive outages of any length: when the connection comes back, or the client reports
// the consumer missing or deleted, the subscription makes sure a consumer exists again (a new
// one starting right after the last stream sequence it had reached) and calls `onResync`,
// because events published while it was away may never arrive (the stream may have dropped
// them): caches reload, live views tell clients to re-read.
//
// A subscription is live while its consumer exists and the connection is up: an event published
// then reaches `onMessage`. Between a disconnect and the end of its recovery it is not, and
// whoever promises delivery (the gateway's "subscribed") waits for `onLive`.
import { randomBytes } from "node:crypto";
import {
  AckPolicy,
  type ConsumerConfig,
  type ConsumerMessages,
  DeliverPolicy,
  type JsMsg,
} from "@nats-io/jetstream";
import { nanos } from "@nats-io/nats-core";
import type { Logger } from "pino";
import { type EventBus, isNotFound, untilAnswered } from "./bus.ts";

/** The server drops an ephemeral consumer this long after its process stopped pulling. */
const ephemeralInactiveMs = 60_000;
/** Pause between attempts to recreate a consumer while the server does not answer. */
const recreateRetryMs = 500;

export interface EphemeralSubscription {
  /** Consumers created so far (1 plus every recreation), for tests and logs. */
  readonly generation: number;
  /** Its consumer exists and the connection is up: what is published now will be delivered. */
  readonly live: boolean;
  close(): Promise<void>;
}

export interface EphemeralOptions {
  stream: string;
  subject: string;
  onMessage: (message: JsMsg) => void;
  /** Called after a reconnect or a recreated consumer: events may have been missed. */
  onResync?: () => void;
  /** Called each time the subscription becomes live: after it opens and after every recovery. */
  onLive?: () => void;
  maxPending?: number;
  logger?: Logger;
}

class LiveSubscription implements EphemeralSubscription {
  readonly #bus: EventBus;
  readonly #options: EphemeralOptions;
  readonly #stream: string;
  #name = "";
  #messages: ConsumerMessages | undefined;
  /**
   * The last stream sequence this subscription has reached: the consumer's start position at
   * first, then each message's. A recreated consumer starts right after it, so events published
   * while there was no consumer are not skipped, even when none had arrived yet.
   */
  #lastSequence = 0;
  #closed = false;
  #recreating: Promise<void> | undefined;
  #stopWatching: (() => void) | undefined;
  generation = 0;

  constructor(bus: EventBus, options: EphemeralOptions) {
    this.#bus = bus;
    this.#options = options;
    this.#stream = bus.names.stream(options.stream);
  }

  get live(): boolean {
    return (
      this.#messages !== undefined && !this.#closed && this.#recreating === undefined && this.#bus.connected
    );
  }

  async open(): Promise<void> {
    // A consumer whose creation was not answered may exist after all: it has no puller, so
    // the server drops it after ephemeralInactiveMs.
    await untilAnswered(() => this.#create());
    this.#stopWatching = this.#bus.onReconnect(() => {
      this.#recover("reconnected");
    });
    this.#options.onLive?.();
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#stopWatching?.();
    await this.#recreating;
    await this.#messages?.close();
    await this.#bus.jsm.consumers.delete(this.#stream, this.#name).catch(() => false);
  }

  /** Creates a consumer: the first delivers what is published from now on, later ones resume. */
  async #create(): Promise<void> {
    const name = `ephemeral-${randomBytes(6).toString("hex")}`;
    const config: Partial<ConsumerConfig> = {
      name,
      filter_subject: this.#bus.names.subject(this.#options.subject),
      ack_policy: AckPolicy.None,
      inactive_threshold: nanos(ephemeralInactiveMs),
      deliver_policy: DeliverPolicy.New,
      // As many replicas as its stream, so a node loss moves it instead of stalling the feed
      // until the node returns (an ephemeral consumer is R1 unless told). Memory is enough: it
      // holds no acknowledgements, only how far it delivered.
      num_replicas: await this.#bus.streamReplicas(this.#stream),
      mem_storage: true,
    };
    if (this.#messages !== undefined) {
      config.deliver_policy = DeliverPolicy.StartSequence;
      config.opt_start_seq = this.#lastSequence + 1;
    }
    const created = await this.#bus.jsm.consumers.add(this.#stream, config);
    this.#lastSequence = Math.max(this.#lastSequence, created.delivered.stream_seq);
    const consumer = await this.#bus.js.consumers.get(this.#stream, name);
    const messages = await consumer.consume({
      max_messages: this.#options.maxPending ?? 256,
      expires: this.#bus.pullExpiresMs,
      callback: (message) => {
        this.#lastSequence = message.seq;
        this.#options.onMessage(message);
      },
    });
    this.#name = name;
    this.#messages = messages;
    this.generation++;
    void this.#watch(messages);
  }

  /** The client says the consumer is gone: make a new one. */
  async #watch(messages: ConsumerMessages): Promise<void> {
    for await (const status of messages.status()) {
      if (status.type === "consumer_not_found" || status.type === "consumer_deleted") {
        this.#recover(status.type);
        return;
      }
    }
  }

  /** Makes sure a consumer exists (recreating it if the server dropped it), then re-syncs. */
  #recover(why: string): void {
    if (this.#closed || this.#recreating !== undefined) return;
    this.#recreating = this.#ensureConsumer(why).finally(() => {
      this.#recreating = undefined;
      if (this.live) this.#options.onLive?.();
    });
  }

  async #ensureConsumer(why: string): Promise<void> {
    while (!this.#closed) {
      try {
        const exists = await this.#bus.jsm.consumers
          .info(this.#stream, this.#name)
          .then(() => true)
          .catch((error: unknown) => {
            if (isNotFound(error)) return false;
            throw error;
          });
        if (!exists) {
          const previous = this.#messages;
          this.#options.logger?.info({ subject: this.#options.subject, why }, "live subscription recreated");
          await this.#create();
          await previous?.close().catch(() => {});
        }
        this.#options.onResync?.();
        return;
      } catch (error) {
        this.#options.logger?.warn(
          { err: error, subject: this.#options.subject },
          "live subscription not ready; retrying",
        );
        await new Promise((resolve) => setTimeout(resolve, recreateRetryMs));
      }
    }
  }
}

export async function subscribeEphemeral(
  bus: EventBus,
  options: EphemeralOptions,
): Promise<EphemeralSubscription> {
  const subscription = new LiveSubscription(bus, options);
  await subscription.open();
  return subscription;
}
