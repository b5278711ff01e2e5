// One LISTEN connection per database per process, shared by everything in the process that waits
// for a NOTIFY: the outbox relay, the job runner, the gateway's notification feed. Each used to
// open its own, and a connection that only listens is a whole Postgres backend (and, behind
// PgBouncer in transaction mode, one that must bypass the pooler: a pooled server connection is
// handed to another client after every transaction, so LISTEN on it hears nothing). Sharing keeps
// the cost at one direct connection per process, whatever the process runs (decision 0043).
//
// The connection is opened when the first subscriber arrives and closed when the last leaves. A
// lost connection is opened again with a 0.1–1 s backoff and every channel listened to again;
// subscribers are told when it is lost and when it is back, because a NOTIFY sent meanwhile went
// to nobody: the outbox relay polls fast while it is away, the job runner looks for due jobs when
// it is back.
import pg from "pg";
import { databaseClient } from "./hosts.ts";

export interface ListenHandlers {
  /** A NOTIFY on one of the subscription's channels. */
  notification(channel: string, payload: string): void;
  /** The connection was lost: NOTIFYs go to nobody until `restored`. */
  lost?(error: Error | undefined): void;
  /** Listening again on every channel after a loss (or after a first connection that failed). */
  restored?(): void;
}

export interface ListenSubscription {
  /** True while the shared connection listens on the subscription's channels. */
  readonly listening: boolean;
  /** Stops the handlers; the connection closes when no subscription is left. */
  close(): Promise<void>;
}

export interface SharedListenerOptions {
  /** Shown in pg_stat_activity, so an operator (or a test) finds the process's LISTEN connection. */
  applicationName?: string;
}

export const listenerLimits = {
  reconnectMinMs: 100,
  reconnectMaxMs: 1_000,
  connectTimeoutMs: 5_000,
  /** TCP keep-alive, so a connection that died silently is noticed and opened again. */
  keepAliveDelayMs: 10_000,
  /** Postgres's longest identifier: a longer channel name would be truncated, silently. */
  channelMaxLength: 63,
} as const;

export const defaultListenerApplicationName = "ovation-listen";

interface Subscriber {
  channels: ReadonlySet<string>;
  handlers: ListenHandlers;
  /** Told `lost` and not yet `restored`. */
  lost: boolean;
}

/**
 * The process's LISTEN connection to one database. Get it with `sharedListener(url)`; it is
 * created on first use and lives as long as it has subscribers.
 */
export class SharedListener {
  readonly url: string;
  readonly #applicationName: string;
  readonly #subscribers = new Set<Subscriber>();
  #client: pg.Client | undefined;
  /** The connection being opened, which `subscribe` waits for. */
  #connecting: Promise<void> | undefined;
  #retry: NodeJS.Timeout | undefined;
  #backoffMs: number = listenerLimits.reconnectMinMs;
  /** Channels LISTENed on the current connection. */
  readonly #listened = new Set<string>();
  /** Connections opened so far (a test sees a reconnect). */
  connections = 0;

  constructor(url: string, options: SharedListenerOptions = {}) {
    this.url = url;
    this.#applicationName = options.applicationName ?? defaultListenerApplicationName;
  }

  /** True while the connection is open. */
  get connected(): boolean {
    return this.#client !== undefined;
  }

  /**
   * Listens on `channels` for `handlers`. Resolves once the connection listens on them, or once a
   * first attempt to connect failed: then `lost` has been called, and `restored` follows when a
   * later attempt succeeds.
   */
  async subscribe(channels: readonly string[], handlers: ListenHandlers): Promise<ListenSubscription> {
    for (const channel of channels) {
      if (channel.length === 0 || channel.length > listenerLimits.channelMaxLength)
        throw new Error(`a channel name is 1..${listenerLimits.channelMaxLength} characters: "${channel}"`);
    }
    const subscriber: Subscriber = { channels: new Set(channels), handlers, lost: false };
    this.#subscribers.add(subscriber);
    clearTimeout(this.#retry);
    this.#retry = undefined;
    try {
      await this.#ensureConnected();
      await this.#listenAll();
    } catch (error) {
      this.#lose(this.#client, error instanceof Error ? error : undefined);
    }
    if (!this.connected && !subscriber.lost) {
      subscriber.lost = true;
      this.#call(() => handlers.lost?.(undefined));
    }
    const listener = this;
    return {
      get listening() {
        return (
          listener.#subscribers.has(subscriber) &&
          listener.connected &&
          [...subscriber.channels].every((channel) => listener.#listened.has(channel))
        );
      },
      close: () => this.#unsubscribe(subscriber),
    };
  }

  async #unsubscribe(subscriber: Subscriber): Promise<void> {
    if (!this.#subscribers.delete(subscriber)) return;
    if (this.#subscribers.size === 0) {
      clearTimeout(this.#retry);
      this.#retry = undefined;
      const client = this.#client;
      this.#client = undefined;
      this.#listened.clear();
      await client?.end().catch(() => {});
      return;
    }
    const wanted = this.#wantedChannels();
    const client = this.#client;
    for (const channel of [...this.#listened]) {
      if (wanted.has(channel)) continue;
      this.#listened.delete(channel);
      await client?.query(`unlisten ${pg.escapeIdentifier(channel)}`).catch(() => {});
    }
  }

  #wantedChannels(): Set<string> {
    const wanted = new Set<string>();
    for (const subscriber of this.#subscribers)
      for (const channel of subscriber.channels) wanted.add(channel);
    return wanted;
  }

  #ensureConnected(): Promise<void> {
    if (this.#client !== undefined) return Promise.resolve();
    this.#connecting ??= this.#connect().finally(() => {
      this.#connecting = undefined;
    });
    return this.#connecting;
  }

  async #connect(): Promise<void> {
    // A URL with several hosts (a Postgres that fails over) listens on the one accepting writes,
    // where NOTIFYs are sent: after a failover the connection is lost and opens on the new one.
    const client = databaseClient(this.url, {
      application_name: this.#applicationName,
      connectionTimeoutMillis: listenerLimits.connectTimeoutMs,
      keepAlive: true,
      keepAliveInitialDelayMillis: listenerLimits.keepAliveDelayMs,
    });
    client.on("notification", (message) => this.#dispatch(message.channel, message.payload ?? ""));
    client.on("error", (error) => this.#lose(client, error));
    client.on("end", () => this.#lose(client, undefined));
    this.connections++;
    try {
      await client.connect();
    } catch (error) {
      await client.end().catch(() => {});
      throw error;
    }
    if (this.#subscribers.size === 0) {
      await client.end().catch(() => {});
      return;
    }
    this.#client = client;
    this.#listened.clear();
  }

  /** LISTENs on every channel a subscriber wants that the connection does not listen on yet. */
  async #listenAll(): Promise<void> {
    const client = this.#client;
    if (client === undefined) return;
    for (const channel of this.#wantedChannels()) {
      if (this.#listened.has(channel)) continue;
      await client.query(`listen ${pg.escapeIdentifier(channel)}`);
      this.#listened.add(channel);
    }
    if (this.#client !== client) return;
    this.#backoffMs = listenerLimits.reconnectMinMs;
    for (const subscriber of [...this.#subscribers]) {
      if (!subscriber.lost) continue;
      subscriber.lost = false;
      this.#call(() => subscriber.handlers.restored?.());
    }
  }

  #dispatch(channel: string, payload: string): void {
    for (const subscriber of [...this.#subscribers]) {
      if (subscriber.channels.has(channel))
        this.#call(() => subscriber.handlers.notification(channel, payload));
    }
  }

  /** A handler that throws must not take the connection (or the other subscribers) with it. */
  #call(handler: () => void): void {
    try {
      handler();
    } catch (error) {
      queueMicrotask(() => {
        throw error;
      });
    }
  }

  /** The connection `client` is gone (or never came): tell the subscribers once, and try again. */
  #lose(client: pg.Client | undefined, error: Error | undefined): void {
    if (client !== undefined && client !== this.#client) return;
    if (client !== undefined) {
      this.#client = undefined;
      this.#listened.clear();
      void client.end().catch(() => {});
    }
    if (this.#subscribers.size === 0) return;
    for (const subscriber of [...this.#subscribers]) {
      if (subscriber.lost) continue;
      subscriber.lost = true;
      this.#call(() => subscriber.handlers.lost?.(error));
    }
    this.#scheduleReconnect();
  }

  #scheduleReconnect(): void {
    if (this.#retry !== undefined) return;
    this.#retry = setTimeout(() => {
      this.#retry = undefined;
      this.#ensureConnected()
        .then(() => this.#listenAll())
        .catch((error: unknown) => this.#lose(this.#client, error instanceof Error ? error : undefined));
    }, this.#backoffMs);
    this.#backoffMs = Math.min(this.#backoffMs * 2, listenerLimits.reconnectMaxMs);
  }
}

const listeners = new Map<string, SharedListener>();

/**
 * The process's shared LISTEN connection to the database at `url` (a direct URL, never one
 * through a transaction-mode pooler). The first caller's options name the connection.
 */
export function sharedListener(url: string, options: SharedListenerOptions = {}): SharedListener {
  let listener = listeners.get(url);
  if (listener === undefined) {
    listener = new SharedListener(url, options);
    listeners.set(url, listener);
  }
  return listener;
}
