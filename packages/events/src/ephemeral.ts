// Ephemeral consumers for per-replica fan-out (cache invalidation, WebSocket delivery): each
// process gets only messages published after it subscribed, acknowledges nothing, and the
// server deletes the consumer when the process goes away. nats.js 3 ordered consumers send
// `filter_subjects`, which nats-server 2.9 refuses, so this creates a plain one.
import { randomBytes } from "node:crypto";
import { AckPolicy, DeliverPolicy, type JsMsg } from "@nats-io/jetstream";
import { nanos } from "@nats-io/nats-core";
import type { EventBus } from "./bus.ts";

/** The server drops an ephemeral consumer this long after its process stopped pulling. */
const ephemeralInactiveMs = 60_000;

export interface EphemeralSubscription {
  close(): Promise<void>;
}

export async function subscribeEphemeral(
  bus: EventBus,
  options: { stream: string; subject: string; onMessage: (message: JsMsg) => void; maxPending?: number },
): Promise<EphemeralSubscription> {
  const stream = bus.names.stream(options.stream);
  const name = `ephemeral-${randomBytes(6).toString("hex")}`;
  await bus.jsm.consumers.add(stream, {
    name,
    filter_subject: bus.names.subject(options.subject),
    deliver_policy: DeliverPolicy.New,
    ack_policy: AckPolicy.None,
    inactive_threshold: nanos(ephemeralInactiveMs),
  });
  const consumer = await bus.js.consumers.get(stream, name);
  const messages = await consumer.consume({
    max_messages: options.maxPending ?? 256,
    callback: options.onMessage,
  });
  return {
    async close() {
      await messages.close();
      await bus.jsm.consumers.delete(stream, name).catch(() => false);
    },
  };
}
