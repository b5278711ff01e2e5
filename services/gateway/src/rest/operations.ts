// The operator's REST routes the gateway answers itself (decision 0044), beside DlqService's
// annotated ones: consumer lag and the outbox rows JetStream refused, with a retry. Admin role
// only; the rate limits are those of every route (per address before the token is verified, per
// user after). A bus or database outage is a 503 with Retry-After, like every route.
import { Code } from "@connectrpc/connect";
import { anonymous, isAdmin, type TokenVerifier } from "@ovation/auth";
import { isNatsOutage } from "@ovation/events";
import { identifyBearer } from "../auth-token.ts";
import { clientAddress, sendJson } from "../http.ts";
import { type Operations, outboxServices } from "../operations.ts";
import { badRequest, HttpError } from "./errors.ts";
import type { RestExchange } from "./handler.ts";
import type { RateLimiter } from "./rate-limit.ts";

export const consumersPath = "/api/admin/consumers";
export const outboxPath = "/api/admin/outbox";
/** POST /api/admin/outbox/{service}/{id}/retry */
const retryPattern = /^\/api\/admin\/outbox\/([^/]+)\/([^/]+)\/retry$/;
const outboxIdPattern = /^[1-9][0-9]{0,18}$/;
const outageRetryAfterSeconds = "1";

export interface OperationsContext {
  operations: Operations;
  verify: TokenVerifier;
  limiter: RateLimiter;
  trustProxy: boolean;
}

/** True when `path` is one of these routes (with or without an outbox, for a clear 404). */
export const isOperationsPath = (path: string, withOutbox: boolean) =>
  path === consumersPath || (withOutbox && (path === outboxPath || retryPattern.test(path)));

/** The route's metrics label: its template, never a row id (which would grow the label set). */
export const operationsRouteLabel = (path: string) =>
  retryPattern.test(path) ? "/api/admin/outbox/{service}/{id}/retry" : path;

export async function serveOperations(context: OperationsContext, exchange: RestExchange): Promise<void> {
  const { request, response, url } = exchange;
  const path = url.pathname;
  const write = path !== consumersPath && path !== outboxPath;
  const method = write ? "POST" : "GET";
  if (request.method !== method && !(method === "GET" && request.method === "HEAD"))
    throw new HttpError(405, Code.Unimplemented, `${request.method} is not allowed here`, { allow: method });
  if ([...url.searchParams.keys()].length > 0) throw badRequest("invalid request: this route takes no query");
  await requireAdmin(context, exchange, write ? "write" : "read");
  const headers = { "x-request-id": exchange.requestId };
  try {
    if (path === consumersPath) {
      const consumers = await context.operations.consumerLag();
      return sendJson(response, 200, { time: new Date().toISOString(), consumers }, headers);
    }
    if (path === outboxPath) {
      return sendJson(response, 200, { rows: await context.operations.failingOutboxRows() }, headers);
    }
    const [, service = "", id = ""] = retryPattern.exec(path) ?? [];
    if (!outboxServices.includes(service))
      throw badRequest(`invalid request: service: one of ${outboxServices.join(", ")}`);
    if (!outboxIdPattern.test(id)) throw badRequest("invalid request: id: an outbox row id");
    if (!(await context.operations.retryOutboxRow(service, id)))
      throw new HttpError(404, Code.NotFound, `no outbox row ${id} in ${service} (it may have gone out)`);
    return sendJson(response, 200, { service, id, due: true }, headers);
  } catch (error) {
    if (isNatsOutage(error))
      throw new HttpError(503, Code.Unavailable, "the event bus is unavailable, retry later", {
        "retry-after": outageRetryAfterSeconds,
      });
    throw error;
  }
}

async function requireAdmin(
  context: OperationsContext,
  { request }: RestExchange,
  kind: "read" | "write",
): Promise<void> {
  await context.limiter.checkAddress(kind, clientAddress(request, context.trustProxy));
  const identity = await identifyBearer(request.headers.authorization ?? "", context.verify);
  if (identity === anonymous) throw new HttpError(401, Code.Unauthenticated, "sign-in required");
  await context.limiter.checkUser(kind, identity.subject);
  if (!isAdmin(identity)) throw new HttpError(403, Code.PermissionDenied, "requires role admin");
}

const adminErrors = {
  "401": { description: "unauthenticated" },
  "403": { description: "permission_denied: not an admin" },
  "429": { description: "resource_exhausted" },
  "503": { description: "unavailable: the bus or the database did not answer; retry" },
};

const consumerLagSchema = {
  type: "object",
  required: ["service", "stream", "consumer", "pending", "ackPending", "redelivered"],
  properties: {
    service: { type: "string", description: "The service that runs the consumer." },
    stream: { type: "string", description: "Its stream, for example GIFT." },
    consumer: { type: "string", description: "The durable consumer's name." },
    pending: { type: "integer", description: "Messages not delivered yet." },
    ackPending: { type: "integer", description: "Delivered and not acknowledged yet." },
    redelivered: { type: "integer", description: "Delivered more than once so far." },
  },
};

const outboxRowSchema = {
  type: "object",
  required: [
    "service",
    "id",
    "eventId",
    "subject",
    "type",
    "attempts",
    "lastError",
    "nextAttempt",
    "createdAt",
  ],
  properties: {
    service: {
      type: "string",
      enum: [...outboxServices],
      description: "The service (and schema) whose outbox holds the row.",
    },
    id: { type: "string", description: "The row id (an integer as a string)." },
    eventId: { type: "string" },
    subject: { type: "string", description: "The event subject, without the deployment prefix." },
    type: { type: "string", description: "The event's protobuf type name." },
    attempts: { type: "integer", description: "Publishes JetStream refused so far." },
    lastError: { type: "string", description: "Why the last publish failed." },
    nextAttempt: { type: "string", format: "date-time" },
    createdAt: { type: "string", format: "date-time" },
  },
};

const jsonContent = (schema: Record<string, unknown>) => ({ "application/json": { schema } });

/** The routes in the OpenAPI document, beside those generated from the annotations. */
export function operationsPaths(withOutbox: boolean): Record<string, Record<string, unknown>> {
  const consumers = {
    [consumersPath]: {
      get: {
        tags: ["Operations"],
        operationId: "listConsumerLag",
        summary: "Lag of each durable consumer",
        description:
          "Every durable consumer that exists, with the messages it has not been delivered yet and those it has not acknowledged yet, from JetStream's consumer info. Sample it to see lag over time. Admin only.",
        security: [{ bearerAuth: [] }],
        responses: {
          "200": {
            description: "The consumers, and when they were read.",
            content: jsonContent({
              type: "object",
              required: ["time", "consumers"],
              properties: {
                time: { type: "string", format: "date-time" },
                consumers: { type: "array", items: consumerLagSchema },
              },
            }),
          },
          "400": { description: "invalid_argument: a query parameter" },
          ...adminErrors,
        },
      },
    },
  };
  if (!withOutbox) return consumers;
  return {
    ...consumers,
    [outboxPath]: {
      get: {
        tags: ["Operations"],
        operationId: "listFailingOutboxRows",
        summary: "Outbox rows JetStream refused",
        description: `Rows of the outboxes (${outboxServices.join(", ")}) whose publish failed at least once, oldest first, at most 100 per service, with their attempts, last error and next attempt. A row is never dropped: once its cause is fixed it goes out by itself. The same view as \`./ov outbox list SERVICE\`. Admin only.`,
        security: [{ bearerAuth: [] }],
        responses: {
          "200": {
            description: "The failing rows.",
            content: jsonContent({
              type: "object",
              required: ["rows"],
              properties: { rows: { type: "array", items: outboxRowSchema } },
            }),
          },
          "400": { description: "invalid_argument: a query parameter" },
          ...adminErrors,
        },
      },
    },
    "/api/admin/outbox/{service}/{id}/retry": {
      post: {
        tags: ["Operations"],
        operationId: "retryOutboxRow",
        summary: "Publish an outbox row again now",
        description:
          "Makes the row due now instead of after its backoff, like `./ov outbox retry SERVICE ID`. Admin only.",
        security: [{ bearerAuth: [] }],
        parameters: [
          {
            name: "service",
            in: "path",
            required: true,
            schema: { type: "string", enum: [...outboxServices] },
          },
          {
            name: "id",
            in: "path",
            required: true,
            schema: { type: "string", pattern: "^[1-9][0-9]{0,18}$" },
          },
        ],
        responses: {
          "200": {
            description: "The row is due now.",
            content: jsonContent({
              type: "object",
              required: ["service", "id", "due"],
              properties: { service: { type: "string" }, id: { type: "string" }, due: { type: "boolean" } },
            }),
          },
          "400": { description: "invalid_argument: an unknown service or a malformed id" },
          "404": { description: "not_found: no such row (it may have gone out meanwhile)" },
          ...adminErrors,
        },
      },
    },
  };
}
