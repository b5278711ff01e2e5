// Ephemeral consumers for per-replica fan-out (cache invalidation, WebSocket delivery): each
// process gets only messages published after it subscribed, acknowledges nothing, and the
// server deletes the consumer once the process has been away for `ephemeralInactiveMs`. nats.js
// 3 ordered consumers send `filter_subjects`, which nats-server 2.9 refuses, so this creates a
// plain one.
//
// They survive outages of any length: when the connection comes back, or the client reports
// the consumer missing or deleted, the subscription makes sure a consumer exists again (a new
// one starting where the last message left off) and calls `onResync`, because events published
// while it was away may never arrive: caches reload, live views tell clients to re-read.
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
import { type EventBus, isNotFound } from "./bus.ts";

/** The server drops an ephemeral consumer this long after its process stopped pulling. */
const ephemeralInactiveMs = 60_000;
/** Pause between attempts to recreate a consumer while the server does not answer. */
const recreateRetryMs = 500;

export interface EphemeralSubscription {
  /** Consumers created so far (1 plus every recreation), for tests and logs. */
  readonly generation: number;
  close(): Promise<void>;
}

export interface EphemeralOptions {
  stream: string;
  subject: string;
  onMessage: (message: JsMsg) => void;
  /** Called after a reconnect or a recreated consumer: events may have been missed. */
  onResync?: () => void;
  maxPending?: number;
  logger?: Logger;
}

class LiveSubscription implements EphemeralSubscription {
  readonly #bus: EventBus;
  readonly #options: EphemeralOptions;
  readonly #stream: string;
  #name = "";
  #messages: ConsumerMessages | undefined;
  /** Store time of the last message, where a recreated consumer starts. */
  #lastSeenNanos = 0;
  #closed = false;
  #recreating: Promise<void> | undefined;
  #stopWatching: (() => void) | undefined;
  generation = 0;

  constructor(bus: EventBus, options: EphemeralOptions) {
    this.#bus = bus;
    this.#options = options;
    this.#stream = bus.names.stream(options.stream);
  }

  async open(): Promise<void> {
    await this.#create(DeliverPolicy.New);
    this.#stopWatching = this.#bus.onReconnect(() => {
      this.#recover("reconnected");
    });
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#stopWatching?.();
    await this.#recreating;
    await this.#messages?.close();
    await this.#bus.jsm.consumers.delete(this.#stream, this.#name).catch(() => false);
  }

  async #create(policy: DeliverPolicy): Promise<void> {
    const name = `ephemeral-${randomBytes(6).toString("hex")}`;
    const config: Partial<ConsumerConfig> = {
      name,
      filter_subject: this.#bus.names.subject(this.#options.subject),
      ack_policy: AckPolicy.None,
      inactive_threshold: nanos(ephemeralInactiveMs),
      deliver_policy: policy,
    };
    if (policy === DeliverPolicy.StartTime) {
      config.opt_start_time = new Date(Math.floor(this.#lastSeenNanos / 1e6) + 1).toISOString();
    }
    await this.#bus.jsm.consumers.add(this.#stream, config);
    const consumer = await this.#bus.js.consumers.get(this.#stream, name);
    const messages = await consumer.consume({
      max_messages: this.#options.maxPending ?? 256,
      callback: (message) => {
        this.#lastSeenNanos = message.info.timestampNanos;
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
          await this.#create(this.#lastSeenNanos > 0 ? DeliverPolicy.StartTime : DeliverPolicy.New);
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
