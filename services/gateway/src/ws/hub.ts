// The WebSocket hub: accepts upgrades on /ws within the connection limits, keeps the index of
// subscribers per channel key, fans channel messages out (serialized once per message, not
// once per socket) and runs the heartbeat. Everything is bounded: connections in total and per
// user, subscriptions per connection, inbound frame size and rate, outbound buffer per socket.
import type { IncomingMessage } from "node:http";
import type { Duplex } from "node:stream";
import type { TokenVerifier } from "@ovation/auth";
import type { Logger } from "@ovation/server";
import { RateLimiterMemory } from "rate-limiter-flexible";
import { WebSocketServer } from "ws";
import { wsConnections, wsMessagesDropped, wsMessagesSent } from "../metrics.ts";
import { requestUrl } from "../http.ts";
import { channelName, deliveryKey } from "./channels.ts";
import { Connection, type ConnectionHost, type ConnectionLimits } from "./connection.ts";
import type { ChannelMessage } from "./feeds.ts";
import { closeCodes, inboundFrameMaxBytes } from "./protocol.ts";

export interface HubSettings extends ConnectionLimits {
  connectionsMax: number;
  connectionsPerUserMax: number;
  pingIntervalMs: number;
}

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
  readonly #heartbeat: NodeJS.Timeout;
  #closing = false;

  constructor(settings: HubSettings, verify: TokenVerifier, logger: Logger) {
    this.#settings = settings;
    this.limits = settings;
    this.verify = verify;
    this.logger = logger.child({ component: "ws" });
    this.#server = new WebSocketServer({
      noServer: true,
      clientTracking: false,
      maxPayload: inboundFrameMaxBytes,
      perMessageDeflate: false,
      skipUTF8Validation: false,
    });
    this.#heartbeat = setInterval(() => this.#beat(), settings.pingIntervalMs);
    this.#heartbeat.unref();
  }

  /** Takes over an HTTP upgrade request for /ws. */
  upgrade(request: IncomingMessage, socket: Duplex, head: Buffer): void {
    if (this.#closing || this.#connections.size >= this.#settings.connectionsMax) {
      socket.end("HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\ncontent-length: 0\r\n\r\n");
      return;
    }
    const token = requestUrl(request)?.searchParams.get("token") ?? null;
    this.#server.handleUpgrade(request, socket, head, (webSocket) => {
      const connection = new Connection(webSocket, this, token);
      this.#connections.add(connection);
      wsConnections.inc();
    });
  }

  /** Sends a channel message to every subscriber; returns how many sockets took it. */
  publish(message: ChannelMessage, eventId: string, time: Date): number {
    const subscribers = this.#subscribers.get(deliveryKey(message.kind, message.id));
    if (subscribers === undefined) return 0;
    const frame = JSON.stringify({
      channel: channelName(message.kind, message.id),
      type: message.type,
      data: message.data,
      ts: time.toISOString(),
      id: eventId,
    });
    let delivered = 0;
    for (const connection of subscribers) {
      if (connection.deliver(frame)) delivered++;
    }
    wsMessagesSent.inc({ kind: message.kind }, delivered);
    if (subscribers.size > delivered)
      wsMessagesDropped.inc({ kind: message.kind }, subscribers.size - delivered);
    return delivered;
  }

  stats(): { connections: number; channels: number } {
    return { connections: this.#connections.size, channels: this.#subscribers.size };
  }

  admit(_connection: Connection, subject: string): boolean {
    const count = this.#connectionsPerUser.get(subject) ?? 0;
    if (count >= this.#settings.connectionsPerUserMax) return false;
    this.#connectionsPerUser.set(subject, count + 1);
    return true;
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
    for (const connection of this.#connections)
      connection.close(closeCodes.goingAway, "server shutting down");
    const deadline = Date.now() + shutdownGraceMs;
    while (this.#connections.size > 0 && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    for (const connection of this.#connections) connection.socket.terminate();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }

  #beat(): void {
    const now = Date.now();
    for (const connection of this.#connections) connection.heartbeat(now);
  }
}
