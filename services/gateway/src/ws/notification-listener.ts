// Live notifications: every gateway replica LISTENs, on its process's shared LISTEN connection
// (`sharedListener` of @ovation/db, decision 0043), for the NOTIFY the
// notifications table's trigger sends on insert (store/migrations.ts), and pushes each one to
// the user's sockets on this replica, on the `user` channel as type "notification". Only one
// replica's durable consumer inserts a row, but Postgres delivers its NOTIFY, after commit, to
// every listening connection once, and the shared connection to every subscriber once: each
// socket gets it once.
//
// A lost connection is opened again by the shared listener with a 0.1–1 s backoff. NOTIFYs sent while it was away went
// to nobody: those notifications are not pushed, they are in GET /api/notifications (as with
// the live feeds, a client reads state over REST after a gap).

import { z } from "@ovation/config";
import { defaultListenerApplicationName, type ListenSubscription, sharedListener } from "@ovation/db";
import type { Logger } from "@ovation/server";
import { notificationsAnnounced } from "../metrics.ts";
import { notificationChannel } from "../store/migrations.ts";
import type { ChannelMessage } from "./feeds.ts";
import { notificationSchema } from "./messages.ts";

/** Where announced notifications go: the hub (tests may count). */
export interface NotificationSink {
  publish(message: ChannelMessage, eventId: string, time: Date): number;
}

export interface NotificationListenerOptions {
  /** A direct connection string (never through a transaction-mode pooler), for the shared LISTEN connection. */
  databaseUrl: string;
  schema: string;
  sink: NotificationSink;
  logger: Logger;
}

/** The channel message type of a notification on the `user` channel. */
export const notificationMessageType = "notification";
/** Shown in pg_stat_activity, so an operator (or a test) can find the LISTEN connections. */
export const listenerApplicationName = defaultListenerApplicationName;

/** The trigger's payload: the notification as the `user` channel shows it, and whom it is for. */
const announcementSchema = notificationSchema.extend({
  userId: z.string().min(1),
  createTime: z.iso.datetime(),
});

export class NotificationListener {
  readonly #options: NotificationListenerOptions;
  readonly #log: Logger;
  readonly #channel: string;
  #subscription: ListenSubscription | undefined;

  constructor(options: NotificationListenerOptions) {
    this.#options = options;
    this.#log = options.logger.child({ component: "notification-listener" });
    this.#channel = notificationChannel(options.schema);
  }

  /** Starts listening; when the first connection fails it keeps trying in the background. */
  async start(): Promise<void> {
    this.#subscription = await sharedListener(this.#options.databaseUrl).subscribe([this.#channel], {
      notification: (_channel, payload) => this.#announce(payload),
      lost: (error) =>
        this.#log.warn(
          { err: error },
          "notification LISTEN connection lost; live notifications pause until it is back",
        ),
    });
  }

  async stop(): Promise<void> {
    const subscription = this.#subscription;
    this.#subscription = undefined;
    await subscription?.close();
  }

  #announce(payload: string): void {
    let parsed: z.output<typeof announcementSchema>;
    try {
      parsed = announcementSchema.parse(JSON.parse(payload));
    } catch (error) {
      // Only our trigger writes this channel: a payload it did not write is a bug to see, not to crash on.
      this.#log.error({ err: error }, "malformed notification announcement skipped");
      notificationsAnnounced.inc({ outcome: "malformed" });
      return;
    }
    const { userId, ...notification } = parsed;
    const delivered = this.#options.sink.publish(
      { kind: "user", id: userId, type: notificationMessageType, data: notification },
      notification.id,
      new Date(notification.createTime),
    );
    notificationsAnnounced.inc({ outcome: delivered > 0 ? "pushed" : "no_socket" });
  }
}
