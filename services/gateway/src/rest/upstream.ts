// The services behind the gateway: a few HTTP/2 (h2c) connections per upstream address, each
// call in the Connect protocol (0047), a bounded number of calls in flight (admission.ts), a
// deadline on every call, the caller's bearer token and trace context forwarded (services
// verify the token again) and, for /readyz, the calls it answers or else gRPC health checks.
//
// The gateway never resets a stream it started. Every RST_STREAM a service receives spends a
// token of Node's rapid-reset protection (nghttp2: a burst of 1,000, then 33 a second, per
// connection); when they run out the service answers GOAWAY(INTERNAL_ERROR) and every other
// call on that connection fails (measured here: after 1,037 resets sent within 1.2 s, after
// 1,134 within 4 s; docs/decisions/0029). So a call is not cancelled when its REST client goes
// away (a write may commit anyway and the answer is dropped; its deadline bounds it), and at
// the deadline it is the service that ends the call (packages/server answers DEADLINE_EXCEEDED
// by itself): the gateway's own timer runs a little longer and resets the stream only when a
// service does not answer at all.
//
// Several connections, because one HTTP/2 connection is one failure domain: what still goes
// wrong on one (a service that stops answering) does not take every call down at once.
import type { DescMessage, DescService, MessageShape } from "@bufbuild/protobuf";
import { Code, ConnectError, type Transport } from "@connectrpc/connect";
import { createDeadlineSignal } from "@connectrpc/connect/protocol";
import { createConnectTransport, Http2SessionManager } from "@connectrpc/connect-node";
import {
  Health,
  HealthCheckResponse_ServingStatus as ServingStatus,
} from "@ovation/proto/gen/grpc/health/v1/health_pb.ts";
import { traceHeaders, transportErrorInterceptor } from "@ovation/server";
import { Admission, type AdmissionLimits } from "./admission.ts";
import type { UnaryMethod } from "./routes.ts";

export interface UpstreamSpec {
  /** Short name for logs and metrics, for example "wallet". */
  name: string;
  baseUrl: string;
  services: readonly DescService[];
}

export interface CallContext {
  /** The caller's Authorization header, forwarded unchanged; empty for anonymous calls. */
  authorization: string;
  requestId: string;
  /**
   * The client's address as the gateway determined it (TRUST_PROXY), forwarded as
   * X-Forwarded-For so services can throttle per address (discount's code guessing).
   */
  clientAddress: string;
  /**
   * Aborted when the HTTP client goes away: a call still waiting for admission is dropped; one
   * already sent is not cancelled (see above).
   */
  signal: AbortSignal;
}

/** Keep-alive pings find a dead connection before a request does. */
const connectionPingIntervalMs = 30_000;
const connectionPingTimeoutMs = 10_000;
const connectionIdleTimeoutMs = 5 * 60_000;
/** Responses of annotated RPCs are pages of at most 100 rows; 4 MiB is far above that. */
const responseMaxBytes = 4 * 1024 * 1024;
const healthCheckTimeoutMs = 2_000;
/**
 * How old the last answer (to a call or to a health check) may be before /readyz starts a health
 * check (and answers with the last result meanwhile).
 */
const healthMaxAgeMs = 1_000;
/** Errors that do not show the service answering: the call never reached it, or got no answer. */
const unansweredCodes = new Set([
  Code.Unavailable,
  Code.DeadlineExceeded,
  Code.Canceled,
  Code.Unknown,
  Code.Internal,
]);
/**
 * How long after its deadline the gateway waits for a service to end a call itself before it
 * resets the stream: enough for a busy service's timer and the answer to arrive.
 */
const deadlineAnswerGraceMs = 1_000;

export interface UpstreamLimits extends AdmissionLimits {
  /** Deadline of every call, from the moment it is admitted (UPSTREAM_TIMEOUT_MS). */
  timeoutMs: number;
  /** HTTP/2 connections to the upstream, each call on the least busy one. */
  connections: number;
}

/** One HTTP/2 connection (kept alive and re-opened by its session manager). */
interface Channel {
  sessions: Http2SessionManager;
  transport: Transport;
  inFlight: number;
}

export class Upstream {
  readonly name: string;
  readonly baseUrl: string;
  readonly services: readonly DescService[];
  readonly #admission: Admission;
  readonly #channels: Channel[];
  #health: { healthy: boolean; checkedAtMs: number } | undefined;
  #checking: Promise<boolean> | undefined;
  /** When a call last got the service's own answer (a response or an error it sent). */
  #answeredAtMs = Number.NEGATIVE_INFINITY;
  readonly #timeoutMs: number;
  #nextChannel = 0;

  constructor(spec: UpstreamSpec, limits: UpstreamLimits) {
    this.name = spec.name;
    this.baseUrl = spec.baseUrl;
    this.services = spec.services;
    this.#timeoutMs = limits.timeoutMs;
    this.#admission = new Admission(spec.name, limits);
    this.#channels = Array.from({ length: limits.connections }, () => {
      const sessions = new Http2SessionManager(spec.baseUrl, {
        pingIntervalMs: connectionPingIntervalMs,
        pingTimeoutMs: connectionPingTimeoutMs,
        idleConnectionTimeoutMs: connectionIdleTimeoutMs,
      });
      // The Connect protocol, as between services (packages/server/src/clients.ts, 0047).
      const transport = createConnectTransport({
        baseUrl: spec.baseUrl,
        httpVersion: "2",
        sessionManager: sessions,
        interceptors: [transportErrorInterceptor],
        readMaxBytes: responseMaxBytes,
        // Upstreams are on the local network: compression would only cost CPU on both ends.
        acceptCompression: [],
      });
      return { sessions, transport, inFlight: 0 };
    });
  }

  /** Calls `method` once admitted; 503 with Retry-After when the upstream is at its bound. */
  call(
    method: UnaryMethod,
    input: MessageShape<DescMessage>,
    context: CallContext,
  ): Promise<MessageShape<DescMessage>> {
    const headers: Record<string, string> = {
      "x-request-id": context.requestId,
      // The service's deadline; the transport gets none, so its own timer cannot reset the stream.
      "connect-timeout-ms": String(this.#timeoutMs),
      ...traceHeaders(),
    };
    if (context.authorization !== "") headers.authorization = context.authorization;
    if (context.clientAddress !== "") headers["x-forwarded-for"] = context.clientAddress;
    return this.#admission.run(context.signal, async () => {
      const channel = this.#leastBusy();
      const unanswered = createDeadlineSignal(this.#timeoutMs + deadlineAnswerGraceMs);
      channel.inFlight++;
      try {
        const response = await channel.transport.unary(method, unanswered.signal, undefined, headers, input);
        this.#answeredAtMs = performance.now();
        return response.message;
      } catch (error) {
        if (error instanceof ConnectError && !unansweredCodes.has(error.code))
          this.#answeredAtMs = performance.now();
        throw error;
      } finally {
        channel.inFlight--;
        unanswered.cleanup();
      }
    });
  }

  /** 503 with Retry-After when a call arriving now would be refused for a full queue. */
  refuseWhenFull(): void {
    this.#admission.refuseWhenFull();
  }

  /** Calls admitted and not answered yet (for tests and metrics). */
  get inFlight(): number {
    return this.#admission.inFlight;
  }

  /** Calls waiting for a slot (for tests). */
  get waiting(): number {
    return this.#admission.waiting;
  }

  /** The connection with the fewest calls; ties go round-robin so idle ones all get used. */
  #leastBusy(): Channel {
    const count = this.#channels.length;
    const start = this.#nextChannel++ % count;
    let best = this.#channels[start]!;
    for (let offset = 1; offset < count; offset++) {
      const candidate = this.#channels[(start + offset) % count]!;
      if (candidate.inFlight < best.inFlight) best = candidate;
    }
    return best;
  }

  /**
   * True when the upstream answered a call within `healthMaxAgeMs` (0049: a service busy with a
   * burst answers its calls, slowly, while a health check queued behind them times out), or
   * else answered SERVING to its last gRPC health check. A check runs at most once per
   * `healthMaxAgeMs`, when asked and only without recent answers; while it runs the last result
   * is the answer, so /readyz never waits behind a busy service (0033). Only the first question
   * waits for a check.
   */
  healthy(): Promise<boolean> {
    if (performance.now() - this.#answeredAtMs < healthMaxAgeMs) return Promise.resolve(true);
    const last = this.#health;
    if (last !== undefined && performance.now() - last.checkedAtMs < healthMaxAgeMs)
      return Promise.resolve(last.healthy);
    this.#checking ??= this.#check().then((healthy) => {
      this.#health = { healthy, checkedAtMs: performance.now() };
      this.#checking = undefined;
      return healthy;
    });
    return last === undefined ? this.#checking : Promise.resolve(last.healthy);
  }

  async #check(): Promise<boolean> {
    try {
      const response = await this.#leastBusy().transport.unary(
        Health.method.check,
        undefined,
        healthCheckTimeoutMs,
        undefined,
        { service: "" },
      );
      return response.message.status === ServingStatus.SERVING;
    } catch {
      return false;
    }
  }

  close(): void {
    for (const channel of this.#channels) channel.sessions.abort();
  }
}

/** Closes every upstream's connections (on shutdown, after the server has drained). */
export function closeAll(upstreams: readonly Upstream[]): void {
  for (const upstream of upstreams) upstream.close();
}
