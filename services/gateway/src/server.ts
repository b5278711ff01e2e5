// The gateway's own server: one HTTP/1.1 listener for REST (the route table), the gateway's own
// endpoints and the WebSocket upgrade. Stopping drains: new requests are refused as draining,
// sockets are told the gateway is going away, calls in flight get up to shutdownGraceMs.
import http from "node:http";
import type { OwnServer } from "@ovation/service";
import type { GatewayConfig } from "./config.ts";
import { requestUrl } from "./http.ts";
import { createHttpApp, type HttpAppOptions } from "./http-app.ts";
import type { Hub } from "./ws/hub.ts";

/** Time in-flight REST calls get to finish on shutdown. */
const shutdownGraceMs = 10_000;

/** What the HTTP app serves besides its settings: routes, upstreams, tokens, notifications. */
export type GatewayServerParts = Omit<HttpAppOptions, "devTokenTtlSeconds" | "limits" | "trustProxy">;

export function gatewayServer(config: GatewayConfig, parts: GatewayServerParts, hub: Hub): OwnServer {
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
  server.on("upgrade", (request, socket, head) => {
    if (requestUrl(request)?.pathname === "/ws") hub.upgrade(request, socket, head);
    else socket.end("HTTP/1.1 404 Not Found\r\nconnection: close\r\ncontent-length: 0\r\n\r\n");
  });
  let port = 0;
  return {
    name: "http server",
    get port() {
      return port;
    },
    get url() {
      return `http://${config.HOST}:${port}`;
    },
    async start() {
      await new Promise<void>((resolve, reject) => {
        server.once("error", reject);
        server.listen({ port: config.PORT, host: config.HOST, backlog: config.HTTP_LISTEN_BACKLOG }, resolve);
      });
      port = (server.address() as { port: number }).port;
      options.logger.info(
        {
          url: this.url,
          routes: options.routes.routes.length,
          upstreams: options.upstreams.map((u) => u.name),
        },
        "listening",
      );
    },
    async stop() {
      app.draining = true;
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeIdleConnections();
      await hub.close();
      const deadline = Date.now() + shutdownGraceMs;
      while (app.inFlight > 0 && Date.now() < deadline)
        await new Promise((resolve) => setTimeout(resolve, 20));
      server.closeAllConnections();
      await closed;
    },
  };
}
