// Server interceptors shared by every service: request logging and metrics, error hygiene,
// a bound on concurrent calls and a default deadline. The order in startServer is trace →
// logging → concurrency → deadline → auth → handler.
import { randomUUID } from "node:crypto";
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { type Logger, loggerKey } from "./logger.ts";
import { rpcDuration } from "./metrics.ts";
import { currentTrace } from "./trace.ts";
import { retryPushbackHeader } from "./transport-errors.ts";

const requestIdHeader = "x-request-id";
const requestIdMaxLength = 128;

/**
 * Logs every call once with its outcome and duration, records metrics, and turns unexpected
 * errors into a bare INTERNAL so that no stack trace or SQL leaks to the caller.
 */
export function observabilityInterceptor(logger: Logger): Interceptor {
  return (next) => async (request) => {
    const started = performance.now();
    const procedure = `${request.service.typeName}/${request.method.name}`;
    const traceId = currentTrace()?.traceId;
    let log: Logger | undefined;
    const requestLog = () => {
      if (log === undefined) {
        const incoming = request.header.get(requestIdHeader) ?? "";
        const requestId = incoming !== "" && incoming.length <= requestIdMaxLength ? incoming : randomUUID();
        log = logger.child({ requestId, procedure, traceId });
      }
      return log;
    };
    request.contextValues.set(loggerKey, requestLog);
    let code = "ok";
    try {
      return await next(request);
    } catch (error) {
      const connectError = toConnectError(error, requestLog);
      code = Code[connectError.code] ?? String(connectError.code);
      throw connectError;
    } finally {
      const seconds = (performance.now() - started) / 1000;
      rpcDuration.observe({ procedure, code }, seconds);
      if (logger.isLevelEnabled("debug"))
        requestLog().debug({ code, durationMs: Math.round(seconds * 1000) }, "rpc");
    }
  };
}

function toConnectError(error: unknown, log: () => Logger): ConnectError {
  if (error instanceof ConnectError) {
    if (error.code === Code.Internal || error.code === Code.Unknown)
      log().error({ err: error }, "rpc failed");
    return error;
  }
  log().error({ err: error }, "unexpected error in handler");
  return new ConnectError("internal error", Code.Internal);
}

/**
 * A call past its deadline answers DEADLINE_EXCEEDED at once instead of hanging until its
 * handler returns: the client's own deadline, or `defaultMs` for calls without one. Ending the
 * call here also spares the client from resetting the stream: every RST_STREAM a connection
 * sends counts against Node's rapid-reset protection, which closes the connection with every
 * other call on it (the gateway lets the service end calls at their deadline for this reason).
 * Handlers pass ctx.signal on to downstream work, which stops it too.
 */
export function deadlineInterceptor(defaultMs: number): Interceptor {
  return (next) => async (request) => {
    const timeout = request.header.has("grpc-timeout") || request.header.has("connect-timeout-ms");
    const expiry = timeout ? clientDeadline(request.signal) : ownDeadline(defaultMs);
    try {
      return await Promise.race([next(request), expiry.expired]);
    } finally {
      expiry.cancel();
    }
  };
}

interface Expiry {
  /** Rejects with DEADLINE_EXCEEDED when the deadline passes; never resolves. */
  expired: Promise<never>;
  cancel(): void;
}

/** The deadline the client sent, as Connect's handler signal tells it (not its cancellation). */
function clientDeadline(signal: AbortSignal): Expiry {
  let onAbort: (() => void) | undefined;
  const expired = new Promise<never>((_, reject) => {
    onAbort = () => {
      const reason: unknown = signal.reason;
      if (reason instanceof ConnectError && reason.code === Code.DeadlineExceeded) reject(reason);
    };
    if (signal.aborted) onAbort();
    else signal.addEventListener("abort", onAbort, { once: true });
  });
  return { expired, cancel: () => signal.removeEventListener("abort", onAbort!) };
}

function ownDeadline(defaultMs: number): Expiry {
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new ConnectError(`no answer within ${defaultMs} ms`, Code.DeadlineExceeded)),
      defaultMs,
    );
  });
  return { expired, cancel: () => clearTimeout(timer) };
}

/** Calls one process serves at once unless its ServerOptions say otherwise. */
export const rpcConcurrencyMax = 512;
/** How long a refused caller is asked to wait: long enough for the calls in flight to finish. */
export const overloadRetryAfterMs = 1_000;

/**
 * Bounds the calls a process works on at once. Past `concurrencyMax` a call is refused at once
 * with UNAVAILABLE and a retry pushback instead of joining an unbounded queue for the database
 * pool, where it would only time out after holding memory and a stream. Health checks are
 * exempt: an overloaded process is busy, not dead, and must not be taken out of rotation.
 */
export function concurrencyLimitInterceptor(concurrencyMax: number): Interceptor {
  let inFlight = 0;
  return (next) => async (request) => {
    if (request.service.typeName === healthServiceName) return next(request);
    if (inFlight >= concurrencyMax) {
      throw new ConnectError(`over ${concurrencyMax} calls in flight, retry later`, Code.Unavailable, {
        [retryPushbackHeader]: String(overloadRetryAfterMs),
      });
    }
    inFlight++;
    try {
      return await next(request);
    } finally {
      inFlight--;
    }
  };
}

const healthServiceName = "grpc.health.v1.Health";
