// One WebSocket client: authentication (a token offered with the upgrade, or the first frame),
// subscriptions, outbound backpressure and heartbeats. Inbound frames are handled one at a
// time in arrival order.
//
// Backpressure: a socket whose unsent bytes exceed sendBufferMaxBytes gets no new messages
// (they are dropped and counted; the client hears how many once it catches up), so one slow
// reader never holds memory or slows the fan-out to others. A socket still over the limit after
// slowClientGraceMs is closed with 1013 and terminated if the close cannot get through.
import type { Identity, TokenVerifier } from "@ovation/auth";
import type { Logger } from "@ovation/server";
import type { RateLimiterMemory } from "rate-limiter-flexible";
import { type RawData, WebSocket } from "ws";
import { identifyToken } from "../auth-token.ts";
import { wsClosed } from "../metrics.ts";
import { type ResolvedChannel, resolveChannel } from "./channels.ts";
import { type ClientFrame, closeCodes, parseClientFrame, type ServerReply } from "./protocol.ts";

export interface ConnectionLimits {
  subscriptionsMax: number;
  sendBufferMaxBytes: number;
  slowClientGraceMs: number;
  authTimeoutMs: number;
}

/** What came with the upgrade: a token to verify, nothing (an auth frame must follow), or a refusal. */
export type InitialAuth =
  | { kind: "token"; token: string }
  | { kind: "none" }
  | { kind: "refuse"; reason: string };

/** What a connection needs from the hub that owns it. */
export interface ConnectionHost {
  readonly verify: TokenVerifier;
  readonly limits: ConnectionLimits;
  readonly frameLimiter: RateLimiterMemory;
  readonly logger: Logger;
  /** Counts the connection against its user's limit; false when the user has too many. */
  admit(connection: Connection, subject: string): boolean;
  /**
   * True once every live feed exists and NATS is connected (waiting a bounded time), so that
   * what is published after a "subscribed" reaches the socket; false when they are not in time.
   */
  feedsLive(): Promise<boolean>;
  index(connection: Connection, key: string): void;
  unindex(connection: Connection, key: string): void;
  removed(connection: Connection): void;
}

/** Frames waiting to be handled; a client that outruns the handler is abusing the socket. */
const inboundPendingMax = 32;
/** Time a close handshake gets before the socket is terminated. */
const closeHandshakeMs = 1_000;
/** Timers longer than this overflow setTimeout; tokens that live longer are re-checked then. */
const timerMaxMs = 2_147_483_647;

/** Channel frames are JSON text, also when handed over as a Buffer. */
const textFrame = { binary: false } as const;

let nextConnectionId = 1;

export class Connection {
  readonly id = nextConnectionId++;
  readonly socket: WebSocket;
  /** The client's address, for the per-address limit on sockets that have not signed in. */
  readonly address: string;
  identity: Identity | undefined;
  /** Channel name → hub key. */
  readonly subscriptions = new Map<string, string>();
  readonly #host: ConnectionHost;
  readonly #log: Logger;
  #alive = true;
  #closing = false;
  #pending = 0;
  #queue: Promise<void> = Promise.resolve();
  #slowSinceMs: number | undefined;
  #dropped = 0;
  #authTimer: NodeJS.Timeout | undefined;
  #expiryTimer: NodeJS.Timeout | undefined;
  readonly #initialAuth: InitialAuth;

  constructor(socket: WebSocket, host: ConnectionHost, initialAuth: InitialAuth, address: string) {
    this.socket = socket;
    this.address = address;
    this.#host = host;
    this.#initialAuth = initialAuth;
    this.#log = host.logger.child({ connection: this.id });
    socket.on("message", (data, isBinary) => this.#receive(data, isBinary));
    socket.on("pong", () => {
      this.#alive = true;
    });
    socket.on("error", (error) => this.#log.debug({ err: error }, "socket error"));
    socket.once("close", () => this.#cleanUp());
  }

  /** Begins authentication; called once the hub has registered the connection. */
  start(): void {
    const auth = this.#initialAuth;
    if (auth.kind === "refuse") {
      this.close(closeCodes.unauthenticated, auth.reason);
      return;
    }
    if (auth.kind === "token") this.#enqueue(() => this.#authenticate(auth.token, undefined));
    this.#authTimer = setTimeout(
      () => this.close(closeCodes.unauthenticated, "authentication timeout"),
      this.#host.limits.authTimeoutMs,
    );
  }

  /**
   * Writes a frame of channel messages (serialized once for every subscriber) unless the socket
   * is over its send buffer limit; then its `messages` are counted as dropped, and the client
   * hears how many once it catches up.
   */
  deliver(frame: Buffer, messages: number): boolean {
    if (this.#closing || this.socket.readyState !== WebSocket.OPEN) return false;
    if (this.#overLimit(Date.now())) {
      this.#dropped += messages;
      return false;
    }
    if (this.#dropped > 0) {
      this.#reply({ type: "dropped", count: this.#dropped });
      this.#dropped = 0;
    }
    // A Buffer would go out as a binary frame by default; the protocol is JSON text.
    this.socket.send(frame, textFrame);
    return true;
  }

  /** One heartbeat tick: terminate if the last ping went unanswered, else ping again. */
  heartbeat(nowMs: number): void {
    if (this.#closing) return;
    if (!this.#alive) {
      wsClosed.inc({ reason: "heartbeat" });
      this.socket.terminate();
      return;
    }
    this.#alive = false;
    this.socket.ping();
    this.#overLimit(nowMs);
  }

  close(code: number, reason: string): void {
    if (this.#closing) return;
    this.#closing = true;
    wsClosed.inc({ reason: String(code) });
    this.socket.close(code, reason);
    // A client that stopped reading never completes the handshake.
    setTimeout(() => this.socket.terminate(), closeHandshakeMs).unref();
  }

  /** True while over the send buffer limit; closes the socket once that lasts too long. */
  #overLimit(nowMs: number): boolean {
    if (this.socket.bufferedAmount <= this.#host.limits.sendBufferMaxBytes) {
      this.#slowSinceMs = undefined;
      return false;
    }
    this.#slowSinceMs ??= nowMs;
    if (nowMs - this.#slowSinceMs >= this.#host.limits.slowClientGraceMs) {
      this.close(closeCodes.tryAgainLater, "too slow: messages were dropped");
    }
    return true;
  }

  #receive(data: RawData, isBinary: boolean): void {
    this.#alive = true;
    if (this.#pending >= inboundPendingMax) {
      this.close(closeCodes.policyViolation, "too many frames");
      return;
    }
    const text = isBinary ? undefined : rawText(data);
    this.#enqueue(() => this.#handle(text));
  }

  #enqueue(task: () => Promise<void>): void {
    this.#pending++;
    this.#queue = this.#queue
      .then(task)
      .catch((error) => {
        this.#log.error({ err: error }, "frame handling failed");
        this.close(closeCodes.policyViolation, "internal error");
      })
      .finally(() => {
        this.#pending--;
      });
  }

  async #handle(text: string | undefined): Promise<void> {
    if (this.#closing) return;
    if (!(await this.#withinRate())) return this.close(closeCodes.policyViolation, "too many frames");
    const frame = text === undefined ? "frames must be JSON text" : parseClientFrame(text);
    if (typeof frame === "string") {
      if (this.identity === undefined) return this.close(closeCodes.unauthenticated, frame);
      return this.#reply({ type: "error", code: "invalid_argument", message: frame });
    }
    if (frame.op === "auth") return this.#authenticate(frame.token, frame.id);
    if (this.identity === undefined) return this.close(closeCodes.unauthenticated, "authenticate first");
    const reply = await this.#command(frame, this.identity);
    // The socket may have closed while a subscription waited for the feeds.
    if (!this.#closing) this.#reply(reply);
  }

  /** Carries out a subscribe, unsubscribe or ping; returns the answer. */
  async #command(frame: Exclude<ClientFrame, { op: "auth" }>, identity: Identity): Promise<ServerReply> {
    const echo = frame.id === undefined ? {} : { id: frame.id };
    if (frame.op === "ping") return { type: "pong", ...echo };
    const channel = resolveChannel(frame.channel, identity);
    if (typeof channel === "string") {
      return { type: "error", code: "invalid_argument", message: channel, op: frame.op, ...echo };
    }
    if (frame.op === "unsubscribe") {
      if (this.subscriptions.delete(channel.name)) this.#host.unindex(this, channel.key);
      return { type: "unsubscribed", channel: channel.name, ...echo };
    }
    return this.#subscribe(channel, echo);
  }

  /** Subscribes once the live feeds are up: "subscribed" promises every later event. */
  async #subscribe(channel: ResolvedChannel, echo: { id?: string | number }): Promise<ServerReply> {
    const subscriptionsMax = this.#host.limits.subscriptionsMax;
    if (!this.subscriptions.has(channel.name) && this.subscriptions.size >= subscriptionsMax) {
      const message = `at most ${subscriptionsMax} subscriptions per connection`;
      return { type: "error", code: "resource_exhausted", message, op: "subscribe", ...echo };
    }
    if (!(await this.#host.feedsLive())) {
      const message = "live updates are not available yet: subscribe again shortly";
      return { type: "error", code: "unavailable", message, op: "subscribe", ...echo };
    }
    // A socket that closed during the wait is out of the hub's index already; indexing it would leak it.
    if (!this.#closing && !this.subscriptions.has(channel.name)) {
      this.subscriptions.set(channel.name, channel.key);
      this.#host.index(this, channel.key);
    }
    return { type: "subscribed", channel: channel.name, ...echo };
  }

  async #authenticate(token: string, requestId: string | number | undefined): Promise<void> {
    let identity: Identity;
    try {
      identity = await identifyToken(token, this.#host.verify);
    } catch (error) {
      return this.close(closeCodes.unauthenticated, (error as Error).message.slice(0, 100));
    }
    // The socket may have closed while the token was being verified.
    if (this.#closing) return;
    const echo = requestId === undefined ? {} : { id: requestId };
    if (this.identity !== undefined && this.identity.subject !== identity.subject) {
      return this.#reply({
        type: "error",
        code: "permission_denied",
        message: "cannot switch user",
        ...echo,
      });
    }
    if (this.identity === undefined && !this.#host.admit(this, identity.subject)) {
      return this.close(closeCodes.tooManyConnections, "too many connections for this user");
    }
    this.identity = identity;
    clearTimeout(this.#authTimer);
    this.#expireAt(token);
    this.#reply({ type: "authenticated", userId: identity.subject, ...echo });
  }

  /** Closes the connection when its token expires; a fresh auth frame extends it. */
  #expireAt(token: string): void {
    clearTimeout(this.#expiryTimer);
    const expiresAtMs = tokenExpiryMs(token);
    if (expiresAtMs === undefined) return;
    const delayMs = Math.min(Math.max(expiresAtMs - Date.now(), 0), timerMaxMs);
    this.#expiryTimer = setTimeout(() => this.close(closeCodes.unauthenticated, "token expired"), delayMs);
    this.#expiryTimer.unref();
  }

  async #withinRate(): Promise<boolean> {
    try {
      await this.#host.frameLimiter.consume(String(this.id), 1);
      return true;
    } catch {
      return false;
    }
  }

  #reply(reply: ServerReply): void {
    if (this.socket.readyState === WebSocket.OPEN) this.socket.send(JSON.stringify(reply));
  }

  #cleanUp(): void {
    this.#closing = true;
    clearTimeout(this.#authTimer);
    clearTimeout(this.#expiryTimer);
    for (const key of this.subscriptions.values()) this.#host.unindex(this, key);
    this.subscriptions.clear();
    this.#host.removed(this);
  }
}

function rawText(data: RawData): string {
  if (Array.isArray(data)) return Buffer.concat(data).toString("utf8");
  return Buffer.isBuffer(data) ? data.toString("utf8") : Buffer.from(data).toString("utf8");
}

/** The `exp` claim of a token that was already verified, in milliseconds. */
function tokenExpiryMs(token: string): number | undefined {
  try {
    const payload = JSON.parse(Buffer.from(token.split(".")[1] ?? "", "base64url").toString("utf8"));
    return typeof payload.exp === "number" ? payload.exp * 1000 : undefined;
  } catch {
    return undefined;
  }
}
