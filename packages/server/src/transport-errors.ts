// Client side: a call whose connection broke is retryable infrastructure trouble, whatever
// code the transport gave it. connect-node names such failures from a server's point of view:
// ECONNRESET and ERR_STREAM_DESTROYED become ABORTED (409 over REST: "conflict, re-read"), a
// stream closed because the peer's socket went away becomes CANCELED, other HTTP/2 failures
// INTERNAL. A caller who reads 409 after a peer died mid-call may give up on a request that was
// in fact charged; UNAVAILABLE tells it to retry with the same idempotency key, which is safe.
// Statuses the server actually sent arrive as response metadata and are never re-coded.
import { Code, ConnectError, type Interceptor, type StreamResponse } from "@connectrpc/connect";

/** Node error codes of a connection that could not be opened or broke mid-call. */
const connectionErrorCodes = new Set([
  "ECONNRESET",
  "ECONNREFUSED",
  "ECONNABORTED",
  "EPIPE",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "EHOSTDOWN",
  "ENETUNREACH",
  "ENETDOWN",
  "ENOTFOUND",
  "EAI_AGAIN",
  "ERR_SOCKET_CLOSED",
  "ERR_SOCKET_CONNECTION_TIMEOUT",
  "ERR_STREAM_DESTROYED",
  "ERR_STREAM_PREMATURE_CLOSE",
  // HTTP/2 session and stream failures. Request-building errors such as
  // ERR_HTTP2_INVALID_HEADER_VALUE are left out on purpose: retrying them cannot help.
  "ERR_HTTP2_ERROR",
  "ERR_HTTP2_GOAWAY_SESSION",
  "ERR_HTTP2_INVALID_SESSION",
  "ERR_HTTP2_INVALID_STREAM",
  "ERR_HTTP2_OUT_OF_STREAMS",
  "ERR_HTTP2_PING_CANCEL",
  "ERR_HTTP2_SESSION_ERROR",
  "ERR_HTTP2_SETTINGS_CANCEL",
  "ERR_HTTP2_SOCKET_UNBOUND",
  "ERR_HTTP2_STREAM_CANCEL",
  "ERR_HTTP2_STREAM_ERROR",
]);

/**
 * Errors connect-node creates itself, without a cause, when a stream or session ends without a
 * gRPC status: a stream reset (a peer that died closes every stream with CANCEL), a session
 * that died while a stream was being opened, a GOAWAY, a ping timeout. The texts are checked by
 * the transport-errors test against the pinned connect-node.
 */
const transportMessagePatterns = [
  /^http\/2 stream closed with error code /,
  /^http\/2 connection closed with error code /,
  /^expected open session, but it is /,
  /^received GOAWAY without any open streams$/,
  /^PING timed out$/,
  /^connection aborted$/,
] as const;

/** How deep to follow `cause`; real chains are two or three long. */
const causeDepthMax = 8;

function nodeErrorCodes(error: unknown): string[] {
  const codes: string[] = [];
  let current: unknown = error;
  for (let depth = 0; depth < causeDepthMax && current instanceof Error; depth++) {
    const code = (current as { code?: unknown }).code;
    if (typeof code === "string") codes.push(code);
    current = current.cause;
  }
  return codes;
}

/** True when the server sent nothing about this call's outcome: the transport failed. */
export function isTransportError(error: unknown): boolean {
  if (!(error instanceof ConnectError)) return nodeErrorCodes(error).some((c) => connectionErrorCodes.has(c));
  // Any response header or trailer means the server answered; its status stands.
  if ([...error.metadata.keys()].length > 0) return false;
  if (nodeErrorCodes(error.cause).some((code) => connectionErrorCodes.has(code))) return true;
  return error.cause === undefined && transportMessagePatterns.some((p) => p.test(error.rawMessage));
}

function recode(error: unknown): ConnectError {
  const original = ConnectError.from(error);
  return new ConnectError(original.rawMessage, Code.Unavailable, undefined, undefined, error);
}

/**
 * Re-codes transport failures to UNAVAILABLE. Cancellation and deadlines of the call itself
 * (its signal aborted) keep their codes. Put it last, nearest the transport, so the other
 * interceptors see the corrected code.
 */
export const transportErrorInterceptor: Interceptor = (next) => async (request) => {
  try {
    const response = await next(request);
    if (!response.stream) return response;
    return { ...response, message: recodeStream(response, request.signal) };
  } catch (error) {
    if (request.signal.aborted || !isTransportError(error)) throw error;
    throw recode(error);
  }
};

async function* recodeStream(response: StreamResponse, signal: AbortSignal) {
  try {
    yield* response.message;
  } catch (error) {
    if (signal.aborted || !isTransportError(error)) throw error;
    throw recode(error);
  }
}

/**
 * Trailer with which a server that sheds load says how long to wait before retrying (the gRPC
 * retry pushback of proposal A6); the gateway turns it into Retry-After.
 */
export const retryPushbackHeader = "grpc-retry-pushback-ms";
