// JetStream consumers that feed the WebSocket hub. Each gateway replica owns one ephemeral
// consumer per feed (subscribeEphemeral), so every replica sees every event and delivers it to
// its own sockets; a shared durable consumer would split events between replicas. Only events
// published after start are delivered and nothing is acknowledged: a live alert that was
// missed has nothing to retry, and one that arrives late is not news any more.
//
// `LiveFeeds` says whether every feed is live (its consumer exists and NATS is connected).
// Until then /readyz answers 503 and a subscription is not acknowledged: "subscribed" promises
// that what happens from then on reaches the socket, and a replica whose feeds do not exist yet
// (or are being recreated after an outage) cannot keep that promise.
import { fromBinary } from "@bufbuild/protobuf";
import type { JsMsg } from "@nats-io/jetstream";
import { type EphemeralSubscription, type EventBus, headerNames, subscribeEphemeral } from "@ovation/events";
import type { Logger } from "@ovation/server";
import { eventsReceived } from "../metrics.ts";
import type { Feed } from "./feeds.ts";
import type { Hub } from "./hub.ts";

/** Events older than this are not news any more (a consumer catching up after an outage). */
export const liveEventMaxAgeMs = 60_000;
/** Entities whose newest position a feed remembers (feeds.ts `order`); the oldest are forgotten. */
const orderedEntitiesMax = 10_000;

/** The feeds of this replica, and whether all of them are live. */
export class LiveFeeds {
  readonly #consumers: FeedConsumer[] = [];
  readonly #waiters = new Set<() => void>();

  /** A consumer of `feed` that publishes to `hub`, counted here; the service starts it. */
  consumer(feed: Feed, bus: EventBus, hub: Hub, logger: Logger): FeedConsumer {
    const consumer = new FeedConsumer(feed, bus, hub, logger, () => this.#changed());
    this.#consumers.push(consumer);
    return consumer;
  }

  /** True when there are feeds and every one's consumer exists with NATS connected. */
  get live(): boolean {
    return this.#consumers.length > 0 && this.#consumers.every((consumer) => consumer.live);
  }

  /** Resolves true as soon as every feed is live, or false after `timeoutMs`. */
  whenLive(timeoutMs: number): Promise<boolean> {
    if (this.live) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => done(false), timeoutMs);
      const check = () => {
        if (this.live) done(true);
      };
      const done = (live: boolean) => {
        clearTimeout(timer);
        this.#waiters.delete(check);
        resolve(live);
      };
      this.#waiters.add(check);
    });
  }

  #changed(): void {
    for (const check of [...this.#waiters]) check();
  }
}

export class FeedConsumer {
  /** A component of the gateway (packages/service): started before the server, stopped after. */
  readonly name: string;
  readonly #feed: Feed;
  readonly #bus: EventBus;
  readonly #hub: Hub;
  readonly #log: Logger;
  readonly #onLive: () => void;
  /** Per entity, the newest position delivered (for feeds with `order`), least recent first. */
  readonly #newest = new Map<string, number>();
  #subscription: EphemeralSubscription | undefined;

  constructor(feed: Feed, bus: EventBus, hub: Hub, logger: Logger, onLive: () => void) {
    this.name = `live feed ${feed.subject}`;
    this.#feed = feed;
    this.#bus = bus;
    this.#hub = hub;
    this.#log = logger.child({ feed: feed.subject });
    this.#onLive = onLive;
  }

  /** Its consumer exists and NATS is connected: an event published now will be delivered. */
  get live(): boolean {
    return this.#subscription?.live ?? false;
  }

  /** Creates the consumer; events published after this returns are delivered. */
  async start(): Promise<void> {
    this.#subscription = await subscribeEphemeral(this.#bus, {
      stream: this.#feed.stream,
      subject: this.#feed.subject,
      onMessage: (message) => this.#handle(message),
      onLive: this.#onLive,
      logger: this.#log,
    });
    // Its first onLive came before `live` could see the subscription.
    this.#onLive();
  }

  async stop(): Promise<void> {
    await this.#subscription?.close();
  }

  #handle(message: JsMsg): void {
    eventsReceived.inc({ subject: this.#feed.subject, outcome: this.#deliver(message) });
  }

  #deliver(message: JsMsg): "delivered" | "stale" | "undecodable" | "superseded" {
    const publishedAt = new Date(message.info.timestampNanos / 1e6);
    if (Date.now() - publishedAt.getTime() > liveEventMaxAgeMs) return "stale";
    let event: ReturnType<typeof fromBinary>;
    try {
      event = fromBinary(this.#feed.schema, message.data);
    } catch (error) {
      this.#log.warn({ err: error, streamSequence: message.seq }, "undecodable event skipped");
      return "undecodable";
    }
    if (this.#superseded(event)) return "superseded";
    const eventId = message.headers?.get(headerNames.eventId) ?? "";
    for (const channelMessage of this.#feed.messages(event))
      this.#hub.publish(channelMessage, eventId, publishedAt);
    return "delivered";
  }

  /** True when a newer state of the same entity was delivered already; else records this one. */
  #superseded(event: ReturnType<typeof fromBinary>): boolean {
    const order = this.#feed.order?.(event);
    if (order === undefined) return false;
    const newest = this.#newest.get(order.key);
    if (newest !== undefined && newest >= order.position) return true;
    this.#newest.delete(order.key);
    this.#newest.set(order.key, order.position);
    if (this.#newest.size > orderedEntitiesMax) {
      this.#newest.delete(this.#newest.keys().next().value!);
    }
    return false;
  }
}
