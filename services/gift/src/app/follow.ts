// How the gift service keeps an in-process cache true: load it, apply the change events of
// one subject as they arrive (every replica hears every event), reload everything whenever
// events may have been missed (after a NATS reconnect or a recreated consumer) and, as a last
// safety net, on a timer.

import type { JsMsg } from "@nats-io/jetstream";
import { type EventBus, subscribeEphemeral } from "@ovation/events";
import type { Logger } from "pino";

export interface FollowOptions {
  /** Subject filter without the deployment prefix, for example "gift.room.*". */
  subject: string;
  /** Applies one event; `subject` is without the deployment prefix. */
  onEvent: (subject: string, message: JsMsg) => void;
  /** Loads the whole cache again. */
  reload: () => Promise<void>;
  reloadEveryMs: number;
  logger: Logger;
}

export interface Following {
  stop(): Promise<void>;
}

export async function follow(bus: EventBus, options: FollowOptions): Promise<Following> {
  const reload = () =>
    void options.reload().catch((error) => options.logger.warn({ err: error }, "cache reload failed"));
  await options.reload();
  const timer = setInterval(reload, options.reloadEveryMs);
  const subscription = await subscribeEphemeral(bus, {
    stream: "GIFT",
    subject: options.subject,
    onMessage: (message) => options.onEvent(bus.names.unprefixed(message.subject), message),
    onResync: reload,
    logger: options.logger,
  });
  return {
    async stop() {
      clearInterval(timer);
      await subscription.close();
    },
  };
}
