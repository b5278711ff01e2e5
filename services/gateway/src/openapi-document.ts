// The gateway's OpenAPI document: the routes built from the google.api.http annotations, the
// gateway's own endpoints (dev tokens, notifications) where this gateway serves them, and the
// WebSocket API (x-websocket). `GET /api/openapi.json` serves it; `completeOpenApiDocument` is
// the document of a gateway that serves everything, which clients are generated from
// (packages/client) and which a full gateway serves unchanged.

import { upstreamServices } from "./config.ts";
import { notificationsOperation, notificationsPath } from "./rest/notifications.ts";
import { openApiDocument } from "./rest/openapi.ts";
import { operationsPaths } from "./rest/operations.ts";
import { type Route, RouteTable } from "./rest/routes.ts";
import { webSocketDocument } from "./ws/document.ts";

export const tokenPath = "/api/auth/token";
export const openApiPath = "/api/openapi.json";

export interface DocumentedFeatures {
  /** POST /api/auth/token is served (OVATION_DEV_TOKENS). */
  devTokens: boolean;
  /** GET /api/notifications is served (DATABASE_URL). */
  notifications: boolean;
  /** GET /api/admin/consumers is served (every gateway with a bus). */
  consumers: boolean;
  /** GET /api/admin/outbox and its retry are served (DATABASE_URL). */
  outboxes: boolean;
}

export function gatewayOpenApiDocument(
  routes: readonly Route<unknown>[],
  features: DocumentedFeatures,
): Record<string, unknown> {
  return openApiDocument(routes, {
    title: "Ovation API",
    version: "v1",
    description:
      "REST front door of Ovation: wallet, gifts, live rooms and leaderboards, PK battles, discount campaigns, the shop, notifications, operations (DLQ, consumer lag, outboxes, ledger audit); and the WebSocket channels (x-websocket).",
    extraPaths: {
      ...(features.devTokens ? { [tokenPath]: { post: devTokenOperation } } : {}),
      ...(features.notifications ? { [notificationsPath]: { get: notificationsOperation } } : {}),
      ...(features.consumers ? operationsPaths(features.outboxes) : {}),
    },
    webSocket: webSocketDocument,
  });
}

/** The document of a gateway with every upstream, dev tokens and notifications. */
export function completeOpenApiDocument(): Record<string, unknown> {
  const routes = new RouteTable(upstreamServices.map(({ services }) => ({ services, target: undefined })));
  return gatewayOpenApiDocument(routes.routes, {
    devTokens: true,
    notifications: true,
    consumers: true,
    outboxes: true,
  });
}

const devTokenOperation = {
  tags: ["Auth"],
  operationId: "mintDevToken",
  summary: "Mint a token (development and demo deployments only)",
  description:
    "Signs a JWT for any user with the given roles. Served only when OVATION_DEV_TOKENS=true; real deployments verify tokens from an identity provider.",
  security: [],
  requestBody: {
    required: true,
    content: {
      "application/json": {
        schema: {
          type: "object",
          required: ["userId"],
          additionalProperties: false,
          properties: {
            userId: { type: "string", pattern: "^[A-Za-z0-9_.@-]{1,128}$" },
            roles: {
              type: "array",
              items: { type: "string", enum: ["user", "host", "admin"] },
              default: ["user"],
            },
            vipLevel: { type: "integer", minimum: 0, maximum: 100, default: 0 },
          },
        },
      },
    },
  },
  responses: {
    "200": {
      description: "The token and its lifetime in seconds.",
      content: {
        "application/json": {
          schema: {
            type: "object",
            properties: { token: { type: "string" }, expiresIn: { type: "integer" } },
          },
        },
      },
    },
    "400": { description: "invalid_argument" },
    "429": { description: "resource_exhausted" },
  },
};

export type { WebSocketSection } from "./ws/document.ts";
