// The gateway's user notifications, present when it has a database: the store GET
// /api/notifications reads, the two durable consumers that write it (shared by the replicas),
// and this replica's LISTEN connection that pushes each new one to the user's sockets here. The
// listener is a component, started before the consumers, so what they write while catching up
// is pushed too.
import type { Database } from "@ovation/db";
import type { ConsumerSpec } from "@ovation/events";
import type { Component } from "@ovation/service";
import type { Logger } from "pino";
import { boostNotificationConsumer, creditNotificationConsumer } from "./events/notification-consumers.ts";
import { gatewaySchema, NotificationStore } from "./store/notification-store.ts";
import type { Hub } from "./ws/hub.ts";
import { NotificationListener } from "./ws/notification-listener.ts";

export function notificationParts(
  orm: Database,
  databaseUrl: string,
  hub: Hub,
  logger: Logger,
  settings: Pick<ConsumerSpec<never>, "retryBackoffMs" | "ackWaitMs">,
) {
  const store = new NotificationStore(orm);
  const listener = new NotificationListener({ databaseUrl, schema: gatewaySchema, sink: hub, logger });
  const component: Component = {
    name: "notification listener",
    start: () => listener.start(),
    stop: () => listener.stop(),
  };
  return {
    store,
    components: [component],
    consumers: [boostNotificationConsumer(store, settings), creditNotificationConsumer(store, settings)],
  };
}
