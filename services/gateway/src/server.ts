// The gateway's own server: one HTTP/1.1 server for REST (the route table), the gateway's own
// endpoints and the WebSocket upgrade, listening on HTTP_ACCEPT_SOCKETS sockets of one port;
// with MANAGEMENT_PORT, the probes on a thread of their own too (management.ts). Stopping
// drains: new requests are refused as draining (/readyz answers 503 on both ports), sockets are
// told the gateway is going away, calls in flight get up to shutdownGraceMs.
import http, { STATUS_CODES } from "node:http";
import type { Duplex } from "node:stream";
import type { OwnServer } from "@ovation/service";
import type { GatewayConfig } from "./config.ts";
import { requestUrl } from "./http.ts";
import { createHttpApp, type HttpAppOptions } from "./http-app.ts";
import { type Listeners, listenOnSockets } from "./listeners.ts";
import { type Management, startManagement } from "./management.ts";
import type { Hub } from "./ws/hub.ts";

/** Time in-flight REST calls get to finish on shutdown. */
const shutdownGraceMs = 10_000;

/** What the HTTP app serves besides its settings: routes, upstreams, tokens, notifications. */
export type GatewayServerParts = Omit<HttpAppOptions, "devTokenTtlSeconds" | "limits" | "trustProxy">;

export interface GatewayServer extends OwnServer {
  /** The management port's address once started; undefined without MANAGEMENT_PORT. */
  readonly managementUrl: string | undefined;
}

export function gatewayServer(config: GatewayConfig, parts: GatewayServerParts, hub: Hub): GatewayServer {
  const options: HttpAppOptions = {
    ...parts,
    devTokenTtlSeconds: config.DEV_TOKEN_TTL_SECONDS,
    limits: {
      userWrites: config.RATE_LIMIT_USER_WRITES,
      addressWrites: config.RATE_LIMIT_IP_WRITES,
      userReads: config.RATE_LIMIT_USER_READS,
      addressReads: config.RATE_LIMIT_IP_READS,
      windowSeconds: config.RATE_LIMIT_WINDOW_SECONDS,
    },
    trustProxy: config.TRUST_PROXY,
  };
  const app = createHttpApp(options);
  // A request may read its body, wait for admission, then run its upstream call.
  const requestTimeoutMs = config.UPSTREAM_TIMEOUT_MS * 2 + config.UPSTREAM_QUEUE_WAIT_MS;
  const server = http.createServer({ requestTimeout: requestTimeoutMs }, app.handle);
  server.on("clientError", answerClientError);
  server.on("upgrade", (request, socket, head) => {
    if (requestUrl(request)?.pathname === "/ws") hub.upgrade(request, socket, head);
    else socket.end("HTTP/1.1 404 Not Found\r\nconnection: close\r\ncontent-length: 0\r\n\r\n");
  });
  let listeners: Listeners | undefined;
  let management: Management | undefined;
  return {
    name: "http server",
    get port() {
      return listeners?.port ?? 0;
    },
    get url() {
      return `http://${config.HOST}:${this.port}`;
    },
    get managementUrl() {
      return management?.url;
    },
    async start() {
      if (config.MANAGEMENT_PORT !== undefined) {
        management = await startManagement({
          port: config.MANAGEMENT_PORT,
          host: config.HOST,
          staleMs: config.MANAGEMENT_STALE_MS,
          readiness: () => app.readiness(),
          logger: options.logger,
        });
      }
      try {
        listeners = await listenOnSockets(server, {
          port: config.PORT,
          host: config.HOST,
          backlog: config.HTTP_LISTEN_BACKLOG,
          sockets: config.HTTP_ACCEPT_SOCKETS,
        });
      } catch (error) {
        // The public port is taken, say: the management thread must not outlive the failed start.
        await management?.close();
        throw error;
      }
      options.logger.info(
        {
          url: this.url,
          managementUrl: this.managementUrl,
          routes: options.routes.routes.length,
          upstreams: options.upstreams.map((u) => u.name),
        },
        "listening",
      );
    },
    async stop() {
      app.draining = true;
      management?.refresh();
      const closed = listeners?.close();
      server.closeIdleConnections();
      await hub.close();
      const deadline = Date.now() + shutdownGraceMs;
      while (app.inFlight > 0 && Date.now() < deadline)
        await new Promise((resolve) => setTimeout(resolve, 20));
      server.closeAllConnections();
      await closed;
      await management?.close();
    },
  };
}

/** Malformed requests the HTTP parser refuses before any handler sees them, by Node's error code. */
const clientErrors: Record<string, [status: number, code: string, message: string]> = {
  HPE_HEADER_OVERFLOW: [431, "resource_exhausted", "request header fields too large"],
  ERR_HTTP_REQUEST_TIMEOUT: [408, "deadline_exceeded", "the request did not arrive in time"],
};
const malformed: [number, string, string] = [400, "invalid_argument", "malformed HTTP request"];
/** How long a refused connection may keep sending before it is cut. */
const lingerMs = 5_000;

/**
 * Answers a request the parser refused, then closes the connection gracefully: FIN after the
 * answer, and what the client still sends is read and dropped until it closes too (bounded).
 * Node's own handler destroys the socket at once, and unread data makes the kernel reset the
 * connection, so a client still sending loses the answer.
 */
function answerClientError(error: NodeJS.ErrnoException, socket: Duplex): void {
  if (!socket.writable || error.code === "ECONNRESET") {
    socket.destroy();
    return;
  }
  const [status, code, message] = clientErrors[error.code ?? ""] ?? malformed;
  const body = JSON.stringify({ code, message, details: [] });
  socket.end(
    `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\ncontent-type: application/json; charset=utf-8\r\n` +
      `content-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
  );
  const timer = setTimeout(() => socket.destroy(), lingerMs);
  timer.unref();
  socket.on("data", () => {});
  socket.once("end", () => socket.destroy());
  socket.once("close", () => clearTimeout(timer));
  socket.resume();
}
