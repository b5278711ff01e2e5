// The WebSocket channel client. One socket per client, opened on the first subscription: it
// authenticates with its first frame (the token never goes in the URL), subscribes to every
// channel it was asked for, and after any loss (network, gateway restart, a silent peer found by
// the heartbeat) reconnects with capped exponential backoff and jitter and subscribes again.
// Messages are typed per channel kind from the gateway's own catalogue (src/gen/socket.ts), and a
// room's coalesced frames are unpacked, so a listener sees one message at a time.
//
// Nothing is replayed after a reconnect (the gateway keeps no backlog per socket): `onSubscribed`
// runs on every confirmation, which is where an app reads the current state over REST.
import { type BackoffOptions, backoffDelayMs } from "./backoff.ts";
import {
  type ChannelMessages,
  type channelKinds,
  closeCodes,
  type RoomBatch,
  type ServerReply,
  subprotocol,
  webSocketPath,
} from "./gen/socket.ts";
import { resolveToken, type TokenSource } from "./token.ts";

type Kinds = typeof channelKinds;
export type ChannelKind = keyof Kinds;
/** `room:<id>`, `pk:<id>`, `campaign:<id>` or `user` (always the caller's own). */
export type ChannelName = {
  [Kind in ChannelKind]: Kinds[Kind]["scope"] extends "own" ? Kind : `${Kind}:${string}`;
}[ChannelKind];
type KindOf<Name extends string> = Name extends `${infer Kind}:${string}` ? Kind : Name;
/** The messages a channel carries: a union discriminated by `type` (`data` narrows with it). */
export type MessageOf<Name extends ChannelName> = ChannelMessages[KindOf<Name> & ChannelKind];
export type ChannelMessage = ChannelMessages[ChannelKind];

/** idle: nothing subscribed yet; closed: close() was called or the token was refused for good. */
export type ConnectionStatus = "idle" | "connecting" | "open" | "reconnecting" | "closed";

/** The part of the standard WebSocket the client uses: the browser's and Node's global one fit. */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  addEventListener(type: "open" | "error", listener: () => void): void;
  addEventListener(type: "message", listener: (event: { data: unknown }) => void): void;
  addEventListener(type: "close", listener: (event: { code: number; reason: string }) => void): void;
}
export type WebSocketConstructor = new (url: string, protocols: string[]) => WebSocketLike;

export interface ChannelClientOptions {
  /** The gateway's origin (http://host:8080; the socket path is added) or the full ws(s):// URL. */
  url: string;
  token: TokenSource;
  reconnect?: BackoffOptions;
  /**
   * How often the client pings. A socket that has said nothing for a whole interval, a ping
   * included, is taken as dead and replaced; so is one that has not authenticated by then.
   * Default 15 s.
   */
  heartbeatIntervalMs?: number;
  /** Default: the global WebSocket (browsers, Node 22+). */
  WebSocket?: WebSocketConstructor;
}

export interface SubscribeOptions {
  /**
   * Runs each time the gateway confirms the subscription: first, and after every reconnect.
   * Events between a loss and the confirmation were not delivered: read the state over REST here.
   */
  onSubscribed?: () => void;
}

export interface Subscription {
  readonly channel: ChannelName;
  /** Resolves at the first confirmation; rejects with a ChannelError when refused or closed first. */
  readonly ready: Promise<void>;
  /** Stops this listener; the channel is left when no listener remains. */
  unsubscribe(): void;
}

/** What went wrong: `code` is the gateway's error code, or the client's own below. */
export class ChannelError extends Error {
  override readonly name = "ChannelError";
  readonly code: string;
  readonly channel: string | undefined;

  constructor(code: string, message: string, channel?: string) {
    super(message);
    this.code = code;
    this.channel = channel;
  }
}

export interface ChannelEvents {
  status: ConnectionStatus;
  /** Messages the gateway left out: over the send buffer (no channel), or a room frame's smallest gifts. */
  dropped: { channel: string | undefined; count: number };
  /** A refused subscription or token, a socket closed by the gateway, a listener that threw. */
  error: ChannelError;
}

const defaultHeartbeatIntervalMs = 15_000;
/** How long close() waits for the closing handshake before it lets the socket go. */
const closeWaitMs = 1_000;
const socketOpen = 1;
const socketClosed = 3;

/** Every reply type, so a frame is told from a channel message (whose types are "<domain>.<event>"). */
const replyTypes: Record<ServerReply["type"], true> = {
  authenticated: true,
  subscribed: true,
  unsubscribed: true,
  pong: true,
  error: true,
  dropped: true,
};
const roomBatchType: RoomBatch["type"] = "batch";

interface Listener {
  onMessage: (message: ChannelMessage) => void;
  onSubscribed: (() => void) | undefined;
  resolve: () => void;
  reject: (error: ChannelError) => void;
  settled: boolean;
}

interface Channel {
  listeners: Set<Listener>;
  /** Confirmed on the current socket. */
  confirmed: boolean;
  /** Subscribes answered "unavailable" in a row (the gateway's feeds are not up yet). */
  unavailableAttempts: number;
}

export class ChannelClient {
  readonly #options: ChannelClientOptions;
  readonly #url: string;
  readonly #WebSocket: WebSocketConstructor;
  readonly #channels = new Map<string, Channel>();
  /** Subscribe frames in flight by their id, so a refusal finds its channel. */
  readonly #pending = new Map<number, string>();
  readonly #listeners: { [Event in keyof ChannelEvents]: Set<(value: ChannelEvents[Event]) => void> } = {
    status: new Set(),
    dropped: new Set(),
    error: new Set(),
  };
  #status: ConnectionStatus = "idle";
  #socket: WebSocketLike | undefined;
  #authenticated = false;
  /** Anything heard on the socket since the last heartbeat tick. */
  #heard = false;
  #attempt = 0;
  #nextFrameId = 1;
  #reconnectTimer: ReturnType<typeof setTimeout> | undefined;
  #heartbeatTimer: ReturnType<typeof setInterval> | undefined;

  constructor(options: ChannelClientOptions) {
    this.#options = options;
    this.#url = socketUrl(options.url);
    const socketConstructor =
      options.WebSocket ?? (globalThis.WebSocket as unknown as WebSocketConstructor | undefined);
    if (socketConstructor === undefined) throw new Error("no WebSocket: pass options.WebSocket");
    this.#WebSocket = socketConstructor;
  }

  get status(): ConnectionStatus {
    return this.#status;
  }

  /** Listens to `event`; returns the function that stops listening. */
  on<Event extends keyof ChannelEvents>(
    event: Event,
    listener: (value: ChannelEvents[Event]) => void,
  ): () => void {
    const listeners = this.#listeners[event] as Set<(value: ChannelEvents[Event]) => void>;
    listeners.add(listener);
    return () => listeners.delete(listener);
  }

  subscribe<Name extends ChannelName>(
    channel: Name,
    onMessage: (message: MessageOf<Name>) => void,
    options: SubscribeOptions = {},
  ): Subscription {
    if (this.#status === "closed") throw new ChannelError("closed", "the channel client is closed", channel);
    let listener!: Listener;
    const ready = new Promise<void>((resolve, reject) => {
      listener = {
        onMessage: onMessage as (message: ChannelMessage) => void,
        onSubscribed: options.onSubscribed,
        resolve,
        reject,
        settled: false,
      };
    });
    // A caller that never awaits `ready` must not get an unhandled rejection from it.
    ready.catch(() => {});
    let state = this.#channels.get(channel);
    if (state === undefined) {
      state = { listeners: new Set(), confirmed: false, unavailableAttempts: 0 };
      this.#channels.set(channel, state);
      if (this.#authenticated) this.#sendSubscribe(channel);
    }
    state.listeners.add(listener);
    if (state.confirmed) queueMicrotask(() => this.#confirmed(listener));
    if (this.#status === "idle") void this.#connect();
    return { channel, ready, unsubscribe: () => this.#unsubscribe(channel, listener) };
  }

  /** Closes the socket for good; pending subscriptions are rejected. */
  async close(): Promise<void> {
    if (this.#status === "closed") return;
    const socket = this.#socket;
    this.#shutDown(new ChannelError("closed", "the channel client was closed"));
    if (socket === undefined || socket.readyState === socketClosed) return;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, closeWaitMs);
      socket.addEventListener("close", () => {
        clearTimeout(timer);
        resolve();
      });
      socket.close(1000, "client closed");
    });
  }

  #unsubscribe(channel: string, listener: Listener): void {
    const state = this.#channels.get(channel);
    if (state === undefined || !state.listeners.delete(listener)) return;
    if (!listener.settled) {
      listener.settled = true;
      listener.reject(new ChannelError("unsubscribed", "unsubscribed before it was confirmed", channel));
    }
    if (state.listeners.size > 0) return;
    this.#channels.delete(channel);
    if (this.#authenticated) this.#send({ op: "unsubscribe", channel });
  }

  async #connect(): Promise<void> {
    this.#setStatus(this.#attempt === 0 && this.#status === "idle" ? "connecting" : "reconnecting");
    let token: string | undefined;
    try {
      token = await resolveToken(this.#options.token);
    } catch (error) {
      this.#emit("error", new ChannelError("token_failed", `the token source failed: ${String(error)}`));
      this.#retryLater();
      return;
    }
    if (this.#status === "closed") return;
    if (token === undefined) {
      this.#refused("channels need a signed-in user: no token");
      return;
    }
    const socket = new this.#WebSocket(this.#url, [subprotocol]);
    this.#socket = socket;
    this.#heard = false;
    this.#startHeartbeat();
    socket.addEventListener("open", () => socket.send(JSON.stringify({ op: "auth", token })));
    socket.addEventListener("message", (event) => {
      if (socket === this.#socket) this.#receive(event.data);
    });
    socket.addEventListener("close", (event) => {
      if (socket === this.#socket) this.#lost(event.code, event.reason);
    });
  }

  #receive(data: unknown): void {
    this.#heard = true;
    let frame: { type?: unknown; channel?: unknown };
    try {
      frame = JSON.parse(String(data));
    } catch {
      this.#emit("error", new ChannelError("bad_frame", "the gateway sent a frame that is not JSON"));
      return;
    }
    if (typeof frame.type === "string" && Object.hasOwn(replyTypes, frame.type)) {
      this.#reply(frame as ServerReply);
    } else if (frame.type === roomBatchType) {
      const batch = frame as RoomBatch;
      for (const message of batch.messages) this.#deliver(message);
      if (batch.dropped > 0) this.#emit("dropped", { channel: batch.channel, count: batch.dropped });
    } else if (typeof frame.channel === "string") {
      this.#deliver(frame as ChannelMessage);
    }
  }

  #reply(reply: ServerReply): void {
    switch (reply.type) {
      case "authenticated":
        this.#authenticated = true;
        this.#attempt = 0;
        this.#setStatus("open");
        for (const channel of this.#channels.keys()) this.#sendSubscribe(channel);
        return;
      case "subscribed": {
        if (typeof reply.id === "number") this.#pending.delete(reply.id);
        const state = this.#channels.get(reply.channel);
        if (state === undefined) {
          // Unsubscribed while the subscribe was in flight: leave it again.
          this.#send({ op: "unsubscribe", channel: reply.channel });
          return;
        }
        state.confirmed = true;
        state.unavailableAttempts = 0;
        for (const listener of state.listeners) this.#confirmed(listener);
        return;
      }
      case "error":
        this.#refusal(reply);
        return;
      case "dropped":
        this.#emit("dropped", { channel: undefined, count: reply.count });
        return;
      case "unsubscribed":
      case "pong":
        return;
    }
  }

  /** A subscribe refused: "unavailable" is tried again later; anything else fails its listeners. */
  #refusal(reply: Extract<ServerReply, { type: "error" }>): void {
    const channel = typeof reply.id === "number" ? this.#pending.get(reply.id) : undefined;
    if (typeof reply.id === "number") this.#pending.delete(reply.id);
    const state = channel === undefined ? undefined : this.#channels.get(channel);
    const error = new ChannelError(reply.code, reply.message, channel);
    if (channel === undefined || state === undefined) {
      this.#emit("error", error);
      return;
    }
    if (reply.code === "unavailable") {
      const socket = this.#socket;
      const delayMs = backoffDelayMs(state.unavailableAttempts++, this.#options.reconnect);
      setTimeout(() => {
        if (socket === this.#socket && this.#authenticated && this.#channels.get(channel) === state) {
          this.#sendSubscribe(channel);
        }
      }, delayMs);
      return;
    }
    this.#channels.delete(channel);
    for (const listener of state.listeners) {
      listener.settled = true;
      listener.reject(error);
    }
    this.#emit("error", error);
  }

  #confirmed(listener: Listener): void {
    if (!listener.settled) {
      listener.settled = true;
      listener.resolve();
    }
    this.#call(listener.onSubscribed, undefined);
  }

  #deliver(message: ChannelMessage): void {
    const state = this.#channels.get(message.channel);
    if (state === undefined) return;
    for (const listener of state.listeners) this.#call(listener.onMessage, message, message.channel);
  }

  /** Runs an app's callback; one that throws is reported, never allowed to break the socket. */
  #call<Value>(callback: ((value: Value) => void) | undefined, value: Value, channel?: string): void {
    try {
      callback?.(value);
    } catch (error) {
      this.#emit("error", new ChannelError("listener_failed", String(error), channel));
    }
  }

  #sendSubscribe(channel: string): void {
    const id = this.#nextFrameId++;
    this.#pending.set(id, channel);
    this.#send({ op: "subscribe", channel, id });
  }

  #send(frame: Record<string, unknown>): void {
    if (this.#socket?.readyState === socketOpen) this.#socket.send(JSON.stringify(frame));
  }

  /** The socket is gone: forget it, and reconnect unless the gateway refused the token for good. */
  #lost(code: number, reason: string): void {
    this.#forgetSocket();
    if (this.#status === "closed") return;
    if (code === closeCodes.unauthenticated && typeof this.#options.token !== "function") {
      // A fixed token the gateway refused will be refused again: stop rather than loop.
      this.#refused(`the gateway refused the token: ${reason}`);
      return;
    }
    if (code !== 1000 && code !== 1006 && code !== closeCodes.goingAway) {
      this.#emit("error", new ChannelError("closed_by_gateway", `closed with ${code}: ${reason}`));
    }
    this.#retryLater();
  }

  #retryLater(): void {
    this.#setStatus("reconnecting");
    clearTimeout(this.#reconnectTimer);
    const delayMs = backoffDelayMs(this.#attempt++, this.#options.reconnect);
    this.#reconnectTimer = setTimeout(() => void this.#connect(), delayMs);
  }

  #startHeartbeat(): void {
    clearInterval(this.#heartbeatTimer);
    const intervalMs = this.#options.heartbeatIntervalMs ?? defaultHeartbeatIntervalMs;
    this.#heartbeatTimer = setInterval(() => {
      const socket = this.#socket;
      if (socket === undefined) return;
      if (!this.#heard) {
        // Silent for a whole interval (a cut the OS has not noticed, a peer that stopped
        // answering): drop it without waiting for a closing handshake that will not come.
        this.#lost(1006, "no answer within the heartbeat interval");
        socket.close();
        return;
      }
      this.#heard = false;
      // Before authenticating, any other frame would get the socket closed.
      if (this.#authenticated) this.#send({ op: "ping" });
    }, intervalMs);
  }

  #forgetSocket(): void {
    this.#socket = undefined;
    this.#authenticated = false;
    clearInterval(this.#heartbeatTimer);
    this.#pending.clear();
    for (const state of this.#channels.values()) state.confirmed = false;
  }

  /** The token will not do: every subscription fails and the client closes. */
  #refused(message: string): void {
    const error = new ChannelError("unauthenticated", message);
    this.#emit("error", error);
    this.#shutDown(error);
  }

  #shutDown(reason: ChannelError): void {
    clearTimeout(this.#reconnectTimer);
    this.#forgetSocket();
    for (const [channel, state] of this.#channels) {
      for (const listener of state.listeners) {
        if (listener.settled) continue;
        listener.settled = true;
        listener.reject(new ChannelError(reason.code, reason.message, channel));
      }
    }
    this.#channels.clear();
    this.#setStatus("closed");
  }

  #setStatus(status: ConnectionStatus): void {
    if (status === this.#status) return;
    this.#status = status;
    this.#emit("status", status);
  }

  #emit<Event extends keyof ChannelEvents>(event: Event, value: ChannelEvents[Event]): void {
    for (const listener of this.#listeners[event]) {
      try {
        (listener as (value: ChannelEvents[Event]) => void)(value);
      } catch {
        // An event listener that throws must not stop the client; there is nowhere to report it.
      }
    }
  }
}

/** ws(s)://…/ws from the gateway's http(s) URL (a path prefix kept); a ws(s) URL is taken as it is. */
export function socketUrl(url: string): string {
  // In a page a relative URL ("/") means the page's own origin.
  const page = (globalThis as { location?: { href: string } }).location;
  const parsed = new URL(url, page?.href);
  if (parsed.protocol === "ws:" || parsed.protocol === "wss:") return parsed.toString();
  if (parsed.protocol !== "http:" && parsed.protocol !== "https:") {
    throw new Error(`the gateway URL must be http(s) or ws(s), not ${parsed.protocol}`);
  }
  parsed.protocol = parsed.protocol === "https:" ? "wss:" : "ws:";
  parsed.pathname = parsed.pathname.replace(/\/+$/, "") + webSocketPath;
  parsed.search = "";
  return parsed.toString();
}
