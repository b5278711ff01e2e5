// Live notifications: every gateway replica LISTENs on its own connection for the NOTIFY the
// notifications table's trigger sends on insert (store/migrations.ts), and pushes each one to
// the user's sockets on this replica, on the `user` channel as type "notification". Only one
// replica's durable consumer inserts a row, but Postgres delivers its NOTIFY, after commit, to
// every listening connection once: each socket gets it once.
//
// A lost connection is opened again with a 0.1–1 s backoff. NOTIFYs sent while it was away went
// to nobody: those notifications are not pushed, they are in GET /api/notifications (as with
// the live feeds, a client reads state over REST after a gap).

import { z } from "@ovation/config";
import type { Logger } from "@ovation/server";
import pg from "pg";
import { notificationsAnnounced } from "../metrics.ts";
import { notificationChannel } from "../store/migrations.ts";
import type { ChannelMessage } from "./feeds.ts";
import { notificationSchema } from "./messages.ts";

/** Where announced notifications go: the hub (tests may count). */
export interface NotificationSink {
  publish(message: ChannelMessage, eventId: string, time: Date): number;
}

export interface NotificationListenerOptions {
  /** Connection string for the LISTEN connection (a pooled client cannot hold LISTEN). */
  databaseUrl: string;
  schema: string;
  sink: NotificationSink;
  logger: Logger;
}

/** The channel message type of a notification on the `user` channel. */
export const notificationMessageType = "notification";
/** Shown in pg_stat_activity, so an operator (or a test) can find the LISTEN connections. */
export const listenerApplicationName = "ovation-gateway-notifications";

const reconnectBackoff = { minMs: 100, maxMs: 1_000 } as const;
const connectTimeoutMs = 5_000;
/** TCP keep-alive, so a connection that died silently is noticed and opened again. */
const keepAliveDelayMs = 10_000;

/** The trigger's payload: the notification as the `user` channel shows it, and whom it is for. */
const announcementSchema = notificationSchema.extend({
  userId: z.string().min(1),
  createTime: z.iso.datetime(),
});

export class NotificationListener {
  readonly #options: NotificationListenerOptions;
  readonly #log: Logger;
  readonly #channel: string;
  #client: pg.Client | undefined;
  #retry: NodeJS.Timeout | undefined;
  #backoffMs: number = reconnectBackoff.minMs;
  #running = false;

  constructor(options: NotificationListenerOptions) {
    this.#options = options;
    this.#log = options.logger.child({ component: "notification-listener" });
    this.#channel = notificationChannel(options.schema);
  }

  /** Starts listening; when the first connection fails it keeps trying in the background. */
  async start(): Promise<void> {
    this.#running = true;
    await this.#listen().catch((error: Error) => this.#lost(error));
  }

  async stop(): Promise<void> {
    this.#running = false;
    clearTimeout(this.#retry);
    const client = this.#client;
    this.#client = undefined;
    await client?.end().catch(() => {});
  }

  async #listen(): Promise<void> {
    const client = new pg.Client({
      connectionString: this.#options.databaseUrl,
      application_name: listenerApplicationName,
      connectionTimeoutMillis: connectTimeoutMs,
      keepAlive: true,
      keepAliveInitialDelayMillis: keepAliveDelayMs,
    });
    let lost = false;
    const onLost = (error?: Error) => {
      if (lost) return;
      lost = true;
      void client.end().catch(() => {});
      if (this.#client === client) this.#client = undefined;
      this.#lost(error);
    };
    client.on("notification", (message) => {
      if (message.channel === this.#channel) this.#announce(message.payload ?? "");
    });
    client.on("error", onLost);
    client.on("end", () => onLost());
    await client.connect();
    await client.query(`listen "${this.#channel}"`);
    if (!this.#running) {
      await client.end().catch(() => {});
      return;
    }
    this.#client = client;
    this.#backoffMs = reconnectBackoff.minMs;
  }

  #lost(error?: Error): void {
    if (!this.#running) return;
    this.#log.warn(
      { err: error, retryInMs: this.#backoffMs },
      "notification LISTEN connection lost; live notifications pause until it is back",
    );
    clearTimeout(this.#retry);
    this.#retry = setTimeout(() => {
      this.#listen().catch((retryError: Error) => this.#lost(retryError));
    }, this.#backoffMs);
    this.#backoffMs = Math.min(this.#backoffMs * 2, reconnectBackoff.maxMs);
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
