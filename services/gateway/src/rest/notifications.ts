// GET /api/notifications: the caller's own notifications, newest first, a page at a time. The
// one REST route the gateway answers from its own database rather than an upstream: the
// notifications are the gateway's (docs/decisions/0020-user-notifications.md). Limits and
// checks are those of the annotated routes: read rate limits per address before the token is
// verified and per user after, strict query parameters, the shared page cursor.
import { Code } from "@connectrpc/connect";
import { anonymous, type TokenVerifier } from "@ovation/auth";
import { decodePageCursor, encodePageCursor } from "@ovation/server";
import { identifyBearer } from "../auth-token.ts";
import { notificationJson } from "../domain/notifications.ts";
import { clientAddress, sendJson } from "../http.ts";
import type { NotificationStore } from "../store/notification-store.ts";
import { badRequest, HttpError } from "./errors.ts";
import type { RestExchange } from "./handler.ts";
import type { RateLimiter } from "./rate-limit.ts";

export const notificationsPath = "/api/notifications";

export const notificationPageSize = { default: 20, max: 100 } as const;
/** Page tokens we issue are ~50 characters; a longer one is not ours. */
const pageTokenMaxLength = 256;
const queryParameters = new Set(["pageSize", "pageToken"]);

export interface NotificationsContext {
  store: NotificationStore;
  verify: TokenVerifier;
  limiter: RateLimiter;
  trustProxy: boolean;
}

export async function serveNotifications(
  context: NotificationsContext,
  exchange: RestExchange,
): Promise<void> {
  const { request, response, url } = exchange;
  if (request.method !== "GET" && request.method !== "HEAD")
    throw new HttpError(405, Code.Unimplemented, `${request.method} is not allowed here`, { allow: "GET" });
  await context.limiter.checkAddress("read", clientAddress(request, context.trustProxy));
  const identity = await identifyBearer(request.headers.authorization ?? "", context.verify);
  if (identity === anonymous) throw new HttpError(401, Code.Unauthenticated, "sign-in required");
  await context.limiter.checkUser("read", identity.subject);
  const { pageSize, pageToken } = pageQuery(url.searchParams);
  const size = pageSize || notificationPageSize.default;
  const rows = await context.store.list(identity.subject, size + 1, decodePageCursor(pageToken));
  const page = rows.slice(0, size);
  const last = page.at(-1);
  sendJson(
    response,
    200,
    {
      notifications: page.map(notificationJson),
      nextPageToken:
        rows.length > size && last !== undefined ? encodePageCursor({ at: last.createdAt, id: last.id }) : "",
    },
    { "x-request-id": exchange.requestId },
  );
}

/** pageSize 0..100 (0: the default) and pageToken, each at most once; nothing else. */
function pageQuery(query: URLSearchParams): { pageSize: number; pageToken: string } {
  for (const name of new Set(query.keys())) {
    if (!queryParameters.has(name)) throw badRequest(`invalid request: unknown query parameter ${name}`);
    if (query.getAll(name).length > 1) throw badRequest(`invalid request: ${name} may be given once`);
  }
  const sizeText = query.get("pageSize") ?? "0";
  const pageSize = /^(0|[1-9][0-9]{0,3})$/.test(sizeText) ? Number(sizeText) : Number.NaN;
  if (!(pageSize <= notificationPageSize.max))
    throw badRequest(`invalid request: pageSize: an integer 0..${notificationPageSize.max}`);
  const pageToken = query.get("pageToken") ?? "";
  if (pageToken.length > pageTokenMaxLength) throw badRequest("invalid request: page_token: unknown cursor");
  return { pageSize, pageToken };
}

/** Declared once with the `user` channel's messages (ws/messages.ts), which push the same JSON. */
const notificationSchema = { $ref: "#/components/schemas/Notification" };

/** The route in the OpenAPI document, beside those generated from the annotations. */
export const notificationsOperation = {
  tags: ["Notifications"],
  operationId: "listNotifications",
  summary: "List my notifications",
  description:
    "The caller's notifications, newest first: boosts of their profile, live room or PK side, coins that landed in their wallet (purchases, promotion credits, refunds). New ones are also pushed live on the WebSocket `user` channel as type `notification`. Needs a user token.",
  security: [{ bearerAuth: [] }],
  parameters: [
    {
      name: "pageSize",
      in: "query",
      required: false,
      description: `Notifications per page, 1..${notificationPageSize.max}; 0 or absent: ${notificationPageSize.default}.`,
      schema: { type: "integer", minimum: 0, maximum: notificationPageSize.max },
    },
    {
      name: "pageToken",
      in: "query",
      required: false,
      description: "nextPageToken of the previous page; absent or empty for the first page.",
      schema: { type: "string", maxLength: pageTokenMaxLength },
    },
  ],
  responses: {
    "200": {
      description: "A page of notifications.",
      content: {
        "application/json": {
          schema: {
            type: "object",
            required: ["notifications", "nextPageToken"],
            properties: {
              notifications: { type: "array", items: notificationSchema },
              nextPageToken: { type: "string", description: "Empty on the last page." },
            },
          },
        },
      },
    },
    "400": { description: "invalid_argument: a bad pageSize or pageToken, or an unknown parameter" },
    "401": { description: "unauthenticated" },
    "403": { description: "permission_denied: a service token" },
    "429": { description: "resource_exhausted" },
  },
};
