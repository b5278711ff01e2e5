// One error shape for every REST failure: `{code, message, details}` with a Connect code name,
// the HTTP status the code maps to, and never a stack trace. Upstream messages are passed on
// except for server-side failures, whose text may name hosts or internals.
import { create, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { connectErrorOf, httpStatusOf, retryPushbackHeader } from "@ovation/server";

/** A failure the gateway detects itself, with an explicit HTTP status. */
export class HttpError extends Error {
  override name = "HttpError";
  readonly status: number;
  readonly code: Code;
  readonly headers: Readonly<Record<string, string>>;

  constructor(status: number, code: Code, message: string, headers: Record<string, string> = {}) {
    super(message);
    this.status = status;
    this.code = code;
    this.headers = headers;
  }
}

/** The HTTP status of a Connect code: one table for every service (packages/server errors.ts). */
export { httpStatusOf };

/** Messages of these codes describe our side, not the caller's request: replaced by a fixed text. */
const opaqueMessages: Partial<Record<Code, string>> = {
  [Code.Unknown]: "internal error",
  [Code.Internal]: "internal error",
  [Code.DataLoss]: "internal error",
  [Code.Unavailable]: "service unavailable, retry later",
  [Code.DeadlineExceeded]: "the service did not answer in time",
};

/** "InvalidArgument" → "invalid_argument", the spelling of the Connect protocol's JSON errors. */
export const codeName = (code: Code): string =>
  (Code[code] ?? "unknown").replace(/([a-z])([A-Z])/g, "$1_$2").toLowerCase();

export interface ErrorDetail {
  /** Fully qualified protobuf type name of the detail. */
  type: string;
  /** The detail as binary protobuf, base64. */
  value: string;
  debug?: unknown;
}

export interface ErrorBody {
  code: string;
  message: string;
  details: ErrorDetail[];
}

export interface ErrorReply {
  status: number;
  body: ErrorBody;
  headers: Readonly<Record<string, string>>;
  /** True for failures on our side, which deserve an error log (503s are load shedding or outages). */
  serverFault: boolean;
}

/** Turns anything thrown while serving a request into the reply the caller gets. */
export function errorReply(error: unknown): ErrorReply {
  if (error instanceof HttpError) {
    return {
      status: error.status,
      body: { code: codeName(error.code), message: error.message, details: [] },
      headers: error.headers,
      serverFault: error.status >= 500 && error.status !== 503,
    };
  }
  // A database or domain error of the gateway's own (notifications) maps like a service's.
  const connectError = connectErrorOf(error) ?? ConnectError.from(error);
  const code = connectError.code;
  const status = httpStatusOf(code);
  return {
    status,
    body: {
      code: codeName(code),
      message: opaqueMessages[code] ?? connectError.rawMessage,
      details: opaqueMessages[code] === undefined ? detailsOf(connectError) : [],
    },
    headers:
      code === Code.Unavailable ||
      (code === Code.ResourceExhausted && connectError.metadata.has(retryPushbackHeader))
        ? { "retry-after": String(retryAfterSeconds(connectError)) }
        : {},
    // Shedding and transport trouble are expected operating conditions, not bugs to log loudly.
    serverFault: status >= 500 && code !== Code.Unavailable,
  };
}

/** An upstream that sheds load says when to come back (gRPC retry pushback); else in a second. */
function retryAfterSeconds(error: ConnectError): number {
  const pushbackMs = Number(error.metadata.get(retryPushbackHeader) ?? Number.NaN);
  return Number.isFinite(pushbackMs) && pushbackMs > 0 ? Math.ceil(pushbackMs / 1000) : 1;
}

function detailsOf(error: ConnectError): ErrorDetail[] {
  return error.details.map((detail) => {
    if ("type" in detail) {
      const base = { type: detail.type, value: Buffer.from(detail.value).toString("base64") };
      return detail.debug === undefined ? base : { ...base, debug: detail.debug };
    }
    const value = toBinary(detail.desc, create(detail.desc, detail.value));
    return { type: detail.desc.typeName, value: Buffer.from(value).toString("base64") };
  });
}

export const badRequest = (message: string) => new HttpError(400, Code.InvalidArgument, message);
