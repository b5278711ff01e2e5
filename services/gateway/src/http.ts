// Small helpers shared by every plain-HTTP endpoint of the gateway.
import { randomUUID } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import { discardRestOfBody } from "./rest/body.ts";
import { type ErrorReply, errorReply } from "./rest/errors.ts";

const requestIdHeader = "x-request-id";
const requestIdPattern = /^[\x21-\x7e]{1,128}$/;

/** The caller's request id when it is sane (printable, ≤ 128 characters), else a new one. */
export function requestIdOf(request: IncomingMessage): string {
  const incoming = request.headers[requestIdHeader];
  return typeof incoming === "string" && requestIdPattern.test(incoming) ? incoming : randomUUID();
}

/**
 * The request target as a URL, or undefined when it is not one. Origin-form targets ("/a/b")
 * are appended to a base rather than resolved against it: resolving "//" would read it as a
 * host name and throw.
 */
export function requestUrl(request: IncomingMessage): URL | undefined {
  const target = request.url ?? "/";
  try {
    return new URL(target.startsWith("/") ? `http://gateway${target}` : target);
  } catch {
    return undefined;
  }
}

/**
 * The client's address. Behind a proxy (trustProxy) it is the last X-Forwarded-For entry,
 * the one our proxy appended; earlier entries are whatever the client claimed.
 */
export function clientAddress(request: IncomingMessage, trustProxy: boolean): string {
  const forwarded = request.headers["x-forwarded-for"];
  if (trustProxy && typeof forwarded === "string" && forwarded !== "") {
    return forwarded.split(",").at(-1)!.trim();
  }
  return request.socket.remoteAddress ?? "unknown";
}

export function sendJson(
  response: ServerResponse,
  status: number,
  body: unknown,
  headers: Readonly<Record<string, string>> = {},
): void {
  const text = JSON.stringify(body);
  response.writeHead(status, {
    "content-type": "application/json; charset=utf-8",
    "content-length": Buffer.byteLength(text),
    "cache-control": "no-store",
    "x-content-type-options": "nosniff",
    ...headers,
  });
  response.end(text);
}

/** Sends the error reply for `error`; returns it so the caller can log and count it. */
export function sendError(response: ServerResponse, error: unknown): ErrorReply {
  const reply = errorReply(error);
  if (response.headersSent) {
    response.destroy();
    return reply;
  }
  sendJson(response, reply.status, reply.body, reply.headers);
  // A 413 leaves the rest of the body unread: read and drop it, so the client reads the answer.
  if (reply.status === 413 && response.req !== undefined) discardRestOfBody(response.req);
  return reply;
}
