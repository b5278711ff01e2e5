// The services behind the gateway: one gRPC (h2c) connection per upstream address, a deadline
// on every call, the caller's bearer token and trace context forwarded (services verify the
// token again) and gRPC health checks for /readyz.
import type { DescMessage, DescService, MessageShape } from "@bufbuild/protobuf";
import type { Transport } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import {
  Health,
  HealthCheckResponse_ServingStatus as ServingStatus,
} from "@ovation/proto/gen/grpc/health/v1/health_pb.ts";
import { traceHeaders, transportErrorInterceptor } from "@ovation/server";
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

export class Upstream {
  readonly name: string;
  readonly baseUrl: string;
  readonly services: readonly DescService[];
  readonly #sessions: Http2SessionManager;
  readonly #transport: Transport;
  readonly #timeoutMs: number;

  constructor(spec: UpstreamSpec, timeoutMs: number) {
    this.name = spec.name;
    this.baseUrl = spec.baseUrl;
    this.services = spec.services;
    this.#timeoutMs = timeoutMs;
    this.#sessions = new Http2SessionManager(spec.baseUrl, {
      pingIntervalMs: connectionPingIntervalMs,
      pingTimeoutMs: connectionPingTimeoutMs,
      idleConnectionTimeoutMs: connectionIdleTimeoutMs,
    });
    this.#transport = createGrpcTransport({
      baseUrl: spec.baseUrl,
      sessionManager: this.#sessions,
      interceptors: [transportErrorInterceptor],
      defaultTimeoutMs: timeoutMs,
      readMaxBytes: responseMaxBytes,
    });
  }

  async call(
    method: UnaryMethod,
    input: MessageShape<DescMessage>,
    context: CallContext,
  ): Promise<MessageShape<DescMessage>> {
    const headers: Record<string, string> = { "x-request-id": context.requestId, ...traceHeaders() };
    if (context.authorization !== "") headers.authorization = context.authorization;
    const response = await this.#transport.unary(method, context.signal, this.#timeoutMs, headers, input);
    return response.message;
  }

  /** True when the upstream answers SERVING to a gRPC health check of the whole process. */
  async healthy(): Promise<boolean> {
    try {
      const response = await this.#transport.unary(
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
    this.#sessions.abort();
  }
}
