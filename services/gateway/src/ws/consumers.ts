// JetStream consumers that feed the WebSocket hub. Each gateway replica owns one ephemeral
// consumer per feed (subscribeEphemeral), so every replica sees every event and delivers it to
// its own sockets; a shared durable consumer would split events between replicas. Only events
// published after start are delivered and nothing is acknowledged: a live alert that was
// missed has nothing to retry, and one that arrives late is not news any more.
import { fromBinary } from "@bufbuild/protobuf";
import type { JsMsg } from "@nats-io/jetstream";
import { type EphemeralSubscription, type EventBus, headerNames, subscribeEphemeral } from "@ovation/events";
import type { Logger } from "@ovation/server";
import { eventsReceived } from "../metrics.ts";
import type { Feed } from "./feeds.ts";
import type { Hub } from "./hub.ts";

/** Events older than this are not news any more (a consumer catching up after an outage). */
export const liveEventMaxAgeMs = 60_000;

export class FeedConsumer {
  /** A component of the gateway (packages/service): started before the server, stopped after. */
  readonly name: string;
  readonly #feed: Feed;
  readonly #bus: EventBus;
  readonly #hub: Hub;
  readonly #log: Logger;
  #subscription: EphemeralSubscription | undefined;

  constructor(feed: Feed, bus: EventBus, hub: Hub, logger: Logger) {
    this.name = `live feed ${feed.subject}`;
    this.#feed = feed;
    this.#bus = bus;
    this.#hub = hub;
    this.#log = logger.child({ feed: feed.subject });
  }

  /** Creates the consumer; events published after this returns are delivered. */
  async start(): Promise<void> {
    this.#subscription = await subscribeEphemeral(this.#bus, {
      stream: this.#feed.stream,
      subject: this.#feed.subject,
      onMessage: (message) => this.#handle(message),
      logger: this.#log,
    });
  }

  async stop(): Promise<void> {
    await this.#subscription?.close();
  }

  #handle(message: JsMsg): void {
    eventsReceived.inc({ subject: this.#feed.subject, outcome: this.#deliver(message) });
  }

  #deliver(message: JsMsg): "delivered" | "stale" | "undecodable" {
    const publishedAt = new Date(message.info.timestampNanos / 1e6);
    if (Date.now() - publishedAt.getTime() > liveEventMaxAgeMs) return "stale";
    let event: ReturnType<typeof fromBinary>;
    try {
      event = fromBinary(this.#feed.schema, message.data);
    } catch (error) {
      this.#log.warn({ err: error, streamSequence: message.seq }, "undecodable event skipped");
      return "undecodable";
    }
    const eventId = message.headers?.get(headerNames.eventId) ?? "";
    for (const channelMessage of this.#feed.messages(event))
      this.#hub.publish(channelMessage, eventId, publishedAt);
    return "delivered";
  }
}
