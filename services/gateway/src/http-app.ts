// The gateway's HTTP endpoints: probes and metrics, the OpenAPI document and its /docs page, the
// console, the development token endpoint, the operator's views and every annotated REST route.
// Whatever goes wrong becomes the `{code, message, details}` reply of rest/errors.ts; nothing
// escapes as a bare 500.
import type { IncomingMessage, ServerResponse } from "node:http";
import { Code } from "@connectrpc/connect";
import type { TokenVerifier } from "@ovation/auth";
import { type Logger, metricsRegistry, withTrace } from "@ovation/server";
import { mintDevToken, type TokenSigner } from "./auth-token.ts";
import { clientAddress, requestIdOf, requestUrl, sendError, sendJson } from "./http.ts";
import { httpDuration } from "./metrics.ts";
import { gatewayOpenApiDocument, openApiPath, tokenPath } from "./openapi-document.ts";
import type { Operations } from "./operations.ts";
import { readJsonBody } from "./rest/body.ts";
import { consolePath, serveConsole } from "./rest/console.ts";
import { serveDocs } from "./rest/docs.ts";
import { badRequest, HttpError } from "./rest/errors.ts";
import type { ExhaustedCodes } from "./rest/exhausted-codes.ts";
import { type RestExchange, serveRest } from "./rest/handler.ts";
import { notificationsPath, serveNotifications } from "./rest/notifications.ts";
import { isOperationsPath, operationsRouteLabel, serveOperations } from "./rest/operations.ts";
import { RateLimiter, type RateLimits } from "./rest/rate-limit.ts";
import type { RouteTable } from "./rest/routes.ts";
import type { Upstream } from "./rest/upstream.ts";
import type { NotificationStore } from "./store/notification-store.ts";

export interface HttpAppOptions {
  routes: RouteTable<Upstream>;
  upstreams: readonly Upstream[];
  verify: TokenVerifier;
  /** Signs development tokens; undefined when POST /api/auth/token is off. */
  sign: TokenSigner | undefined;
  devTokenTtlSeconds: number;
  limits: RateLimits;
  trustProxy: boolean;
  /** Discount redeems refused from memory (decision 0034); undefined without DISCOUNT_URL. */
  exhausted?: ExhaustedCodes | undefined;
  /** The caller's notifications (GET /api/notifications); undefined without DATABASE_URL. */
  notifications: NotificationStore | undefined;
  /** Consumer lag and failing outbox rows for admins (the latter only with a database). */
  operations?: Operations | undefined;
  /** The gateway's own readiness (NATS connected, live feeds, the database reachable). */
  ready: () => Promise<boolean>;
  logger: Logger;
}

export interface HttpApp {
  handle: (request: IncomingMessage, response: ServerResponse) => void;
  /** Requests being served, for graceful shutdown. */
  inFlight: number;
  /** Set on shutdown: /readyz answers 503 so balancers stop sending traffic. */
  draining: boolean;
  /** The status and body of /readyz. */
  readiness(): Promise<[number, Record<string, unknown>]>;
}

export function createHttpApp(options: HttpAppOptions): HttpApp {
  const limiter = new RateLimiter(options.limits);
  const rest = {
    routes: options.routes,
    verify: options.verify,
    limiter,
    trustProxy: options.trustProxy,
    exhausted: options.exhausted,
  };
  const openApi = JSON.stringify(
    gatewayOpenApiDocument(options.routes.routes, {
      devTokens: options.sign !== undefined,
      notifications: options.notifications !== undefined,
      consumers: options.operations !== undefined,
      outboxes: options.operations?.hasOutboxes ?? false,
    }),
  );

  const app: HttpApp = {
    inFlight: 0,
    draining: false,
    readiness,
    handle(request, response) {
      const url = requestUrl(request);
      if (url === undefined) {
        sendError(response, badRequest("malformed request target"));
        return;
      }
      app.inFlight++;
      const started = performance.now();
      const exchange: RestExchange = {
        request,
        response,
        url,
        requestId: requestIdOf(request),
      };
      let label = "unmatched";
      // Each request is a hop of the client's trace (or starts one); upstream calls carry it.
      withTrace(singleValue(request.headers.traceparent), () =>
        dispatch(exchange, (name) => {
          label = name;
        }),
      )
        .catch((error: unknown) => {
          const reply = sendError(response, error);
          const fields = { err: error, requestId: exchange.requestId, path: exchange.url.pathname };
          if (reply.serverFault) options.logger.error(fields, "request failed");
          else options.logger.debug({ ...fields, status: reply.status }, "request refused");
        })
        .finally(() => {
          app.inFlight--;
          const route = exchange.route?.template.source ?? label;
          const method = request.method ?? "";
          httpDuration.observe(
            { route, method, status: String(response.statusCode) },
            (performance.now() - started) / 1000,
          );
        });
    },
  };

  async function dispatch(exchange: RestExchange, name: (label: string) => void): Promise<void> {
    const { request, response, url } = exchange;
    const path = url.pathname;
    const get = request.method === "GET" || request.method === "HEAD";
    if (get && path === "/healthz") {
      name(path);
      return sendJson(response, 200, { status: "ok" });
    }
    if (get && path === "/readyz") {
      name(path);
      return sendJson(response, ...(await readiness()));
    }
    if (get && path === "/metrics") {
      name(path);
      const text = await metricsRegistry.metrics();
      response.writeHead(200, { "content-type": metricsRegistry.contentType });
      response.end(text);
      return;
    }
    if (get && path === openApiPath) {
      name(path);
      response.writeHead(200, {
        "content-type": "application/json; charset=utf-8",
        "cache-control": "no-cache",
      });
      response.end(openApi);
      return;
    }
    if (get && (await serveDocs(path, response))) return name("/docs");
    if (get && (await serveConsole(path, response))) return name(consolePath);
    if (path === tokenPath && options.sign !== undefined) {
      name(path);
      if (request.method !== "POST")
        throw new HttpError(405, Code.Unimplemented, "use POST", { allow: "POST" });
      await limiter.checkAddress("write", clientAddress(request, options.trustProxy));
      const body = await readJsonBody(request);
      return sendJson(response, 200, await mintDevToken(body, options.sign, options.devTokenTtlSeconds));
    }
    if (path === notificationsPath && options.notifications !== undefined) {
      name(path);
      return serveNotifications({ ...rest, store: options.notifications }, exchange);
    }
    const operations = options.operations;
    if (operations !== undefined && isOperationsPath(path, operations.hasOutboxes)) {
      name(operationsRouteLabel(path));
      return serveOperations({ ...rest, operations }, exchange);
    }
    if (path.startsWith("/api/")) return serveRest(rest, exchange);
    throw new HttpError(404, Code.NotFound, `no route for ${path}`);
  }

  /**
   * Ready when this replica can serve (not draining, its own dependencies up), whatever its
   * upstreams say (0049): a service down or busy would otherwise take every gateway replica out
   * of the balancer, and every route with it, where the gateway answers 503 for only the routes
   * that need that service. The upstreams' health is reported beside.
   */
  async function readiness(): Promise<[number, Record<string, unknown>]> {
    const upstreams = await Promise.all(
      options.upstreams.map(async (upstream) => [upstream.name, await upstream.healthy()] as const),
    );
    const ready = !app.draining && (await options.ready());
    return [
      ready ? 200 : 503,
      { status: ready ? "ready" : "not ready", upstreams: Object.fromEntries(upstreams) },
    ];
  }

  return app;
}

const singleValue = (value: string | string[] | undefined) => (Array.isArray(value) ? undefined : value);
