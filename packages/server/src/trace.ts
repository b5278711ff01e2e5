// W3C trace context (`traceparent`) carried through a whole gift: REST request → gateway →
// gift RPC → wallet RPC → outbox event headers → consumers → the events they publish. The
// current context lives in AsyncLocalStorage, so code in between passes nothing along. There
// is no tracer here: ids tie logs and events of one user action together, and an OpenTelemetry
// SDK can later pick up the same header.
import { AsyncLocalStorage } from "node:async_hooks";
import { randomFillSync } from "node:crypto";
import type { Interceptor } from "@connectrpc/connect";

export const traceparentHeader = "traceparent";

export interface TraceContext {
  /** 32 lower-case hex digits, shared by everything one action causes. */
  traceId: string;
  /** 16 lower-case hex digits, this hop. */
  spanId: string;
  sampled: boolean;
}

const traceparentPattern = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;
const allZero = /^0+$/;
const storage = new AsyncLocalStorage<TraceContext>();

/** The context of a valid version-00 traceparent, else undefined (W3C: ignore what is invalid). */
export function parseTraceparent(value: string | null | undefined): TraceContext | undefined {
  const match = traceparentPattern.exec(value?.trim() ?? "");
  if (match === null || allZero.test(match[1]!) || allZero.test(match[2]!)) return undefined;
  return { traceId: match[1]!, spanId: match[2]!, sampled: (Number.parseInt(match[3]!, 16) & 1) === 1 };
}

export const formatTraceparent = (trace: TraceContext): string =>
  `00-${trace.traceId}-${trace.spanId}-${trace.sampled ? "01" : "00"}`;

/**
 * Random bytes for ids come from a pool filled 4 KiB at a time: one randomFillSync per ~170
 * hops instead of two per hop (each a call into OpenSSL and a new buffer), which was 1.6–2 % of
 * the gateway's and the discount service's CPU in the flash benchmark (issue 20).
 */
const randomPool = Buffer.alloc(4096);
let randomOffset = randomPool.length;

function randomHex(bytes: number): string {
  if (randomOffset + bytes > randomPool.length) {
    randomFillSync(randomPool);
    randomOffset = 0;
  }
  const hex = randomPool.toString("hex", randomOffset, randomOffset + bytes);
  randomOffset += bytes;
  return hex;
}

/** A new hop of `parent`'s trace, or the first hop of a new trace. */
export function childTrace(parent?: TraceContext): TraceContext {
  return {
    traceId: parent?.traceId ?? randomHex(16),
    spanId: randomHex(8),
    sampled: parent?.sampled ?? true,
  };
}

export const currentTrace = (): TraceContext | undefined => storage.getStore();

/** Runs `work` as a hop of the trace in `traceparent` (or of a new trace). */
export function withTrace<T>(traceparent: string | null | undefined, work: () => T): T {
  return storage.run(childTrace(parseTraceparent(traceparent)), work);
}

/** Headers that carry the current trace onwards (empty outside a trace). */
export function traceHeaders(): Record<string, string> {
  const trace = currentTrace();
  return trace === undefined ? {} : { [traceparentHeader]: formatTraceparent(trace) };
}

/** Server side: every RPC runs as a hop of the caller's trace. */
export const traceServerInterceptor: Interceptor = (next) => (request) =>
  withTrace(request.header.get(traceparentHeader), () => next(request));

/** Client side: calls made inside a trace pass it on. */
export const traceClientInterceptor: Interceptor = (next) => (request) => {
  for (const [name, value] of Object.entries(traceHeaders())) request.header.set(name, value);
  return next(request);
};
