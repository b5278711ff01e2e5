// Clients for service-to-service calls: gRPC over HTTP/2 with the caller's service token and
// the current trace context; a broken connection surfaces as UNAVAILABLE (transport-errors.ts).
import type { DescService } from "@bufbuild/protobuf";
import { type Client, createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { traceClientInterceptor } from "./trace.ts";
import { transportErrorInterceptor } from "./transport-errors.ts";

export interface ClientOptions {
  /** Base URL, for example http://127.0.0.1:50051. */
  baseUrl: string;
  interceptors?: Interceptor[];
  /** Deadline for every call unless the call sets its own. */
  defaultTimeoutMs?: number;
}

const defaultClientTimeoutMs = 10_000;

export function createServiceClient<Service extends DescService>(
  service: Service,
  options: ClientOptions,
): Client<Service> {
  const transport = createGrpcTransport({
    baseUrl: options.baseUrl,
    interceptors: [traceClientInterceptor, ...(options.interceptors ?? []), transportErrorInterceptor],
    defaultTimeoutMs: options.defaultTimeoutMs ?? defaultClientTimeoutMs,
    // Keep one HTTP/2 connection warm: gift sends call the wallet on every request.
    pingIntervalMs: 30_000,
    idleConnectionTimeoutMs: 5 * 60_000,
    // Services talk over a local network: compressing a batch's response costs the sender and
    // the receiver CPU (zlib showed in profiles) to save bandwidth nobody is short of.
    acceptCompression: [],
  });
  return createClient(service, transport);
}
