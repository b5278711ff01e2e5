// The services behind the gateway: a few gRPC (h2c) connections per upstream address, a
// bounded number of calls in flight (admission.ts), a deadline on every call, the caller's
// bearer token and trace context forwarded (services verify the token again) and gRPC health
// checks for /readyz.
//
// Several connections, because one HTTP/2 connection is one failure domain: when an overload
// made the gateway cancel a thousand streams at the deadline, Node's rapid-reset protection on
// the service answered with GOAWAY and every unrelated call on that connection died with them.
// Bounded admission keeps the number of streams (and so of cancellations) low; spreading them
// over connections keeps what is left from taking everything down at once.
import type { DescMessage, DescService, MessageShape } from "@bufbuild/protobuf";
import type { Transport } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
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
  /** Aborted when the HTTP client goes away, which cancels the upstream call. */
  signal: AbortSignal;
}

/** Keep-alive pings find a dead connection before a request does. */
const connectionPingIntervalMs = 30_000;
const connectionPingTimeoutMs = 10_000;
const connectionIdleTimeoutMs = 5 * 60_000;
/** Responses of annotated RPCs are pages of at most 100 rows; 4 MiB is far above that. */
const responseMaxBytes = 4 * 1024 * 1024;
const healthCheckTimeoutMs = 2_000;

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
      const transport = createGrpcTransport({
        baseUrl: spec.baseUrl,
        sessionManager: sessions,
        interceptors: [transportErrorInterceptor],
        defaultTimeoutMs: limits.timeoutMs,
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
    const headers: Record<string, string> = { "x-request-id": context.requestId, ...traceHeaders() };
    if (context.authorization !== "") headers.authorization = context.authorization;
    if (context.clientAddress !== "") headers["x-forwarded-for"] = context.clientAddress;
    return this.#admission.run(context.signal, async () => {
      const channel = this.#leastBusy();
      channel.inFlight++;
      try {
        const response = await channel.transport.unary(
          method,
          context.signal,
          this.#timeoutMs,
          headers,
          input,
        );
        return response.message;
      } finally {
        channel.inFlight--;
      }
    });
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

  /** True when the upstream answers SERVING to a gRPC health check of the whole process. */
  async healthy(): Promise<boolean> {
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
