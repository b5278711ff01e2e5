// Service bootstrap: one TCP port serves gRPC (HTTP/2 cleartext), Connect and gRPC-Web (HTTP/1.1
// or HTTP/2), plus GET /metrics, /healthz and /readyz. The first bytes of a connection tell the
// protocols apart: HTTP/2 with prior knowledge always starts with the "PRI * HTTP/2.0" preface.
import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import type { DescFile, DescService } from "@bufbuild/protobuf";
import type { ConnectRouter, Interceptor } from "@connectrpc/connect";
import { type ConnectNodeAdapterOptions, connectNodeAdapter } from "@connectrpc/connect-node";
import { authInterceptor, type TokenVerifier } from "@ovation/auth";
import { Health } from "@ovation/proto/gen/grpc/health/v1/health_pb.ts";
import { errorModelInterceptor } from "./errors.ts";
import { HealthStatus, ServingStatus } from "./health.ts";
import {
  concurrencyLimitInterceptor,
  deadlineInterceptor,
  observabilityInterceptor,
  rpcConcurrencyMax,
} from "./interceptors.ts";
import type { Logger } from "./logger.ts";
import { metricsRegistry } from "./metrics.ts";
import { registerReflection } from "./reflection.ts";
import { traceServerInterceptor } from "./trace.ts";

const http2Preface = Buffer.from("PRI * HTTP/2.0");
const defaultDeadlineMs = 30_000;
const requestBodyMaxBytes = 1024 * 1024;
const shutdownGraceMs = 10_000;
/**
 * Streams one HTTP/2 connection may open. No single client needs more than the process serves
 * at once; the client's HTTP/2 stack queues the rest instead of the server buffering them.
 */
const http2StreamsPerConnectionMax = rpcConcurrencyMax;
/**
 * RST_STREAM frames a connection may send in a burst, and per second after it, before Node's
 * rapid-reset protection closes it with GOAWAY(INTERNAL_ERROR), failing every call on it (Node's
 * defaults, passed explicitly: the protection is worth keeping). Bounding calls in flight does
 * not keep a client below it, since resets add up over time; not resetting does: the gateway
 * never cancels a call it sent, and calls past their deadline are ended here
 * (deadlineInterceptor), not reset by the client (docs/decisions/0029).
 */
const streamResetBurst = 1_000;
const streamResetRatePerSecond = 33;

export interface ServerOptions {
  name: string;
  host: string;
  /** 0 picks a free port (tests). */
  port: number;
  logger: Logger;
  verifyToken: TokenVerifier;
  /** The services this process implements, for health and reflection. */
  services: readonly DescService[];
  /** Proto files to expose through reflection besides those of `services`. */
  files?: readonly DescFile[];
  routes: (router: ConnectRouter) => void;
  interceptors?: Interceptor[];
  /** Calls served at once; more are refused with UNAVAILABLE (default rpcConcurrencyMax). */
  concurrencyMax?: number;
  /** Extra readiness condition for /readyz (for example: database reachable). */
  ready?: () => Promise<boolean>;
}

export interface RunningServer {
  readonly port: number;
  readonly url: string;
  readonly health: HealthStatus;
  /** Stops accepting, lets in-flight calls finish (up to graceMs), then closes. */
  close(graceMs?: number): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

export async function startServer(options: ServerOptions): Promise<RunningServer> {
  const serviceNames = options.services.map((service) => service.typeName);
  const health = new HealthStatus(serviceNames);
  const shutdown = new AbortController();
  const handler = connectNodeAdapter({
    routes: (router) => {
      options.routes(router);
      health.register(router);
      const files = [...options.services.map((s) => s.file), Health.file, ...(options.files ?? [])];
      registerReflection(router, files, [...serviceNames, Health.typeName]);
    },
    interceptors: [
      traceServerInterceptor,
      observabilityInterceptor(options.logger),
      concurrencyLimitInterceptor(options.concurrencyMax ?? rpcConcurrencyMax),
      deadlineInterceptor(defaultDeadlineMs),
      authInterceptor(options.verifyToken),
      ...(options.interceptors ?? []),
      // Innermost: what a handler throws is on the error model by the time anything logs it.
      errorModelInterceptor,
    ],
    readMaxBytes: requestBodyMaxBytes,
    shutdownSignal: shutdown.signal,
    fallback: plainHttpHandler(health, options.ready),
  });
  const h1 = http.createServer(handler);
  const h2 = http2.createServer(
    {
      settings: { maxConcurrentStreams: http2StreamsPerConnectionMax },
      streamResetBurst,
      streamResetRate: streamResetRatePerSecond,
    },
    handler,
  );
  const sockets = new Set<net.Socket>();
  const sessions = new Set<http2.ServerHttp2Session>();
  h2.on("session", (session) => {
    sessions.add(session);
    session.once("close", () => sessions.delete(session));
  });
  const tcp = net.createServer((socket) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
    socket.once("data", (chunk) => {
      socket.pause();
      socket.unshift(chunk);
      (chunk.subarray(0, http2Preface.length).equals(http2Preface) ? h2 : h1).emit("connection", socket);
      process.nextTick(() => socket.resume());
    });
  });
  await new Promise<void>((resolve, reject) => {
    tcp.once("error", reject);
    tcp.listen(options.port, options.host, resolve);
  });
  const address = tcp.address() as net.AddressInfo;
  const url = `http://${options.host}:${address.port}`;
  options.logger.info({ url, services: serviceNames }, "listening");

  let closing: Promise<void> | undefined;
  const close = (graceMs = shutdownGraceMs) => {
    closing ??= drain({ tcp, h1, sessions, sockets, health, shutdown, graceMs, logger: options.logger });
    return closing;
  };
  return { port: address.port, url, health, close, [Symbol.asyncDispose]: () => close() };
}

interface DrainState {
  tcp: net.Server;
  h1: http.Server;
  sessions: Set<http2.ServerHttp2Session>;
  sockets: Set<net.Socket>;
  health: HealthStatus;
  shutdown: AbortController;
  graceMs: number;
  logger: Logger;
}

async function drain(state: DrainState): Promise<void> {
  state.health.setAll(ServingStatus.NOT_SERVING);
  const closed = new Promise<void>((resolve) => state.tcp.close(() => resolve()));
  // GOAWAY lets clients finish open streams and reconnect elsewhere; idle HTTP/1.1 sockets go now.
  for (const session of state.sessions) session.close();
  state.h1.closeIdleConnections();
  state.h1.on("request", (_request, response) => response.setHeader("connection", "close"));
  const deadline = Date.now() + state.graceMs;
  while (state.sockets.size > 0 && Date.now() < deadline) {
    state.h1.closeIdleConnections();
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  if (state.sockets.size > 0) {
    state.logger.warn({ open: state.sockets.size }, "grace period over, aborting in-flight calls");
    state.shutdown.abort();
    for (const socket of state.sockets) socket.destroy();
  }
  await closed;
}

function plainHttpHandler(health: HealthStatus, ready?: () => Promise<boolean>) {
  const handler: NonNullable<ConnectNodeAdapterOptions["fallback"]> = async (request, response) => {
    const reply = (status: number, body: string, type = "text/plain; charset=utf-8") => {
      response.statusCode = status;
      response.setHeader("content-type", type);
      response.end(body);
    };
    if (request.method !== "GET") return reply(404, "not found\n");
    switch (request.url) {
      case "/metrics":
        return reply(200, await metricsRegistry.metrics(), metricsRegistry.contentType);
      case "/healthz":
        return reply(200, "ok\n");
      case "/readyz": {
        const isReady = health.serving && (ready === undefined || (await ready().catch(() => false)));
        return reply(isReady ? 200 : 503, isReady ? "ready\n" : "not ready\n");
      }
      default:
        return reply(404, "not found\n");
    }
  };
  return handler;
}
