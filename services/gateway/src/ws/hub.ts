// The WebSocket hub: accepts upgrades on /ws within the connection limits, keeps the index of
// subscribers per channel key, fans channel messages out (fan-out.ts: serialized once per frame,
// not once per socket, written in batches of sockets that yield to the event loop, a room's
// messages coalesced into one frame per tick) and runs the heartbeat. Everything is bounded: connections in total, per
// user and (until they sign in) per client address, subscriptions per connection, inbound
// frame size and rate, outbound buffer per socket.
//
// Tokens never travel in the URL, where proxies, access logs and browser history keep them:
// a client sends one in its first frame ({"op":"auth"}) or offers it as a subprotocol
// (`Sec-WebSocket-Protocol: ovation.v1, bearer.<jwt>`); the server selects "ovation.v1" and
// never echoes the token. `?token=` works only behind WS_QUERY_TOKEN, for old clients.
import type { IncomingMessage } from "node:http";
import type { Duplex } from "node:stream";
import type { TokenVerifier } from "@ovation/auth";
import type { Logger } from "@ovation/server";
import { RateLimiterMemory } from "rate-limiter-flexible";
import { WebSocketServer } from "ws";
import { clientAddress, requestUrl } from "../http.ts";
import { wsConnections } from "../metrics.ts";
import { channelName, deliveryKey } from "./channels.ts";
import { Connection, type ConnectionHost, type ConnectionLimits, type InitialAuth } from "./connection.ts";
import { FrameWriter, RoomBatcher, type RoomBatchSettings } from "./fan-out.ts";
import type { ChannelMessage } from "./feeds.ts";
import { closeCodes, inboundFrameMaxBytes } from "./protocol.ts";

export interface HubSettings extends ConnectionLimits, RoomBatchSettings {
  connectionsMax: number;
  connectionsPerUserMax: number;
  /** Sockets one client address may hold open before they authenticate. */
  unauthenticatedPerAddressMax: number;
  pingIntervalMs: number;
  /** Accept `?token=` on the URL (WS_QUERY_TOKEN), for clients that cannot do better. */
  queryToken: boolean;
  /** Take the client address from X-Forwarded-For, as the REST rate limits do. */
  trustProxy: boolean;
  /** How long a subscription waits for the live feeds before it is refused as unavailable. */
  feedWaitMs: number;
}

/** Whether the live feeds (consumers.ts) are up, so that a subscription can be acknowledged. */
export interface FeedStatus {
  whenLive(timeoutMs: number): Promise<boolean>;
}

/** The subprotocol of this API; a client that offers it gets it selected. */
export const apiSubprotocol = "ovation.v1";
/** A subprotocol entry that carries the client's token: "bearer.<jwt>". */
const bearerSubprotocolPrefix = "bearer.";

/** Inbound frames per connection per second: subscribing to 32 channels at once fits. */
const inboundFramesPerSecond = 50;
/** Time open sockets get to close on shutdown before they are terminated. */
const shutdownGraceMs = 2_000;

export class Hub implements ConnectionHost {
  readonly verify: TokenVerifier;
  readonly limits: ConnectionLimits;
  readonly frameLimiter = new RateLimiterMemory({
    keyPrefix: "ws-frames",
    points: inboundFramesPerSecond,
    duration: 1,
    blockDuration: 0,
    execEvenly: false,
  });
  readonly logger: Logger;
  readonly #settings: HubSettings;
  readonly #server: WebSocketServer;
  readonly #connections = new Set<Connection>();
  readonly #subscribers = new Map<string, Set<Connection>>();
  readonly #connectionsPerUser = new Map<string, number>();
  /** Connections that have not authenticated yet, counted per client address. */
  readonly #unauthenticated = new Set<Connection>();
  readonly #unauthenticatedPerAddress = new Map<string, number>();
  readonly #heartbeat: NodeJS.Timeout;
  readonly #feeds: FeedStatus;
  readonly #writer = new FrameWriter((key) => this.#subscribers.get(key));
  readonly #rooms: RoomBatcher;
  #closing = false;

  constructor(settings: HubSettings, verify: TokenVerifier, logger: Logger, feeds: FeedStatus) {
    this.#settings = settings;
    this.#feeds = feeds;
    this.limits = settings;
    this.verify = verify;
    this.logger = logger.child({ component: "ws" });
    this.#server = new WebSocketServer({
      noServer: true,
      clientTracking: false,
      maxPayload: inboundFrameMaxBytes,
      perMessageDeflate: false,
      skipUTF8Validation: false,
      // The token entry is never selected, so it never comes back in the response.
      handleProtocols: (protocols) => (protocols.has(apiSubprotocol) ? apiSubprotocol : false),
    });
    this.#rooms = new RoomBatcher(settings, this.#writer);
    this.#heartbeat = setInterval(() => this.#beat(), settings.pingIntervalMs);
    this.#heartbeat.unref();
  }

  /** Takes over an HTTP upgrade request for /ws. */
  upgrade(request: IncomingMessage, socket: Duplex, head: Buffer): void {
    if (this.#closing || this.#connections.size >= this.#settings.connectionsMax) {
      refuseUpgrade(socket, 503, "Service Unavailable", { "retry-after": "1" });
      return;
    }
    const address = clientAddress(request, this.#settings.trustProxy);
    if ((this.#unauthenticatedPerAddress.get(address) ?? 0) >= this.#settings.unauthenticatedPerAddressMax) {
      // Pending sockets sign in or are closed within the authentication timeout.
      const retryAfterSeconds = Math.max(1, Math.ceil(this.limits.authTimeoutMs / 1000));
      refuseUpgrade(socket, 429, "Too Many Requests", { "retry-after": String(retryAfterSeconds) });
      return;
    }
    const auth = this.#initialAuth(request);
    if (auth === undefined) {
      refuseUpgrade(socket, 400, "Bad Request", {});
      return;
    }
    this.#server.handleUpgrade(request, socket, head, (webSocket) => {
      const connection = new Connection(webSocket, this, auth, address);
      this.#connections.add(connection);
      this.#unauthenticated.add(connection);
      this.#unauthenticatedPerAddress.set(address, (this.#unauthenticatedPerAddress.get(address) ?? 0) + 1);
      wsConnections.inc();
      connection.start();
    });
  }

  /** The token offered with the upgrade, if any; undefined when the offer is ambiguous. */
  #initialAuth(request: IncomingMessage): InitialAuth | undefined {
    const offered = (request.headers["sec-websocket-protocol"] ?? "").split(",").map((entry) => entry.trim());
    const bearers = offered.filter((entry) => entry.startsWith(bearerSubprotocolPrefix));
    if (bearers.length > 1) return undefined;
    const headerToken = bearers[0]?.slice(bearerSubprotocolPrefix.length);
    const queryToken = requestUrl(request)?.searchParams.get("token") ?? null;
    if (queryToken === null)
      return headerToken === undefined ? { kind: "none" } : { kind: "token", token: headerToken };
    if (!this.#settings.queryToken) {
      return {
        kind: "refuse",
        reason: "tokens in the URL are refused: send an auth frame or a bearer subprotocol",
      };
    }
    if (headerToken !== undefined) return { kind: "refuse", reason: "send the token once" };
    return { kind: "token", token: queryToken };
  }

  /**
   * Sends a channel message to every subscriber: a room's in its next frame (at most one per
   * tick), any other at once, in order per channel. Returns how many sockets it is addressed to;
   * the writing itself may finish in later turns of the event loop.
   */
  publish(message: ChannelMessage, eventId: string, time: Date): number {
    const key = deliveryKey(message.kind, message.id);
    const subscribers = this.#subscribers.get(key);
    if (subscribers === undefined) return 0;
    const entry = {
      channel: channelName(message.kind, message.id),
      type: message.type,
      data: message.data,
      ts: time.toISOString(),
      id: eventId,
    };
    if (message.kind === "room") this.#rooms.add(key, entry, message.priority);
    else void this.#writer.write(key, message.kind, Buffer.from(JSON.stringify(entry)), 1);
    return subscribers.size;
  }

  stats(): { connections: number; channels: number; roomsCoalescing: number; channelsWriting: number } {
    return {
      connections: this.#connections.size,
      channels: this.#subscribers.size,
      roomsCoalescing: this.#rooms.activeRooms,
      channelsWriting: this.#writer.busyChannels,
    };
  }

  admit(connection: Connection, subject: string): boolean {
    const count = this.#connectionsPerUser.get(subject) ?? 0;
    if (count >= this.#settings.connectionsPerUserMax) return false;
    this.#connectionsPerUser.set(subject, count + 1);
    this.#forgetUnauthenticated(connection);
    return true;
  }

  feedsLive(): Promise<boolean> {
    return this.#feeds.whenLive(this.#settings.feedWaitMs);
  }

  index(connection: Connection, key: string): void {
    let set = this.#subscribers.get(key);
    if (set === undefined) {
      set = new Set();
      this.#subscribers.set(key, set);
    }
    set.add(connection);
  }

  unindex(connection: Connection, key: string): void {
    const set = this.#subscribers.get(key);
    if (set === undefined) return;
    set.delete(connection);
    if (set.size === 0) this.#subscribers.delete(key);
  }

  removed(connection: Connection): void {
    if (!this.#connections.delete(connection)) return;
    wsConnections.dec();
    this.#forgetUnauthenticated(connection);
    const subject = connection.identity?.subject;
    if (subject === undefined) return;
    const count = (this.#connectionsPerUser.get(subject) ?? 1) - 1;
    if (count <= 0) this.#connectionsPerUser.delete(subject);
    else this.#connectionsPerUser.set(subject, count);
  }

  /** Closes every socket with 1001 and stops the heartbeat. */
  async close(): Promise<void> {
    this.#closing = true;
    clearInterval(this.#heartbeat);
    this.#rooms.close();
    for (const connection of this.#connections)
      connection.close(closeCodes.goingAway, "server shutting down");
    const deadline = Date.now() + shutdownGraceMs;
    while (this.#connections.size > 0 && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    for (const connection of this.#connections) connection.socket.terminate();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }

  #forgetUnauthenticated(connection: Connection): void {
    if (!this.#unauthenticated.delete(connection)) return;
    const count = (this.#unauthenticatedPerAddress.get(connection.address) ?? 1) - 1;
    if (count <= 0) this.#unauthenticatedPerAddress.delete(connection.address);
    else this.#unauthenticatedPerAddress.set(connection.address, count);
  }

  #beat(): void {
    const now = Date.now();
    for (const connection of this.#connections) connection.heartbeat(now);
  }
}

function refuseUpgrade(socket: Duplex, status: number, text: string, headers: Record<string, string>): void {
  const lines = Object.entries(headers).map(([name, value]) => `${name}: ${value}\r\n`);
  socket.end(`HTTP/1.1 ${status} ${text}\r\n${lines.join("")}connection: close\r\ncontent-length: 0\r\n\r\n`);
}
