// Clients for service-to-service calls: the Connect protocol over HTTP/2 (binary protobuf) with
// the caller's service token and the current trace context; a broken connection surfaces as
// UNAVAILABLE (transport-errors.ts). Connect rather than gRPC: a unary Connect call is one plain
// request and response, where gRPC runs every unary call through connect-es's streaming
// machinery (envelopes, trailers); half the CPU per call, measured in decision 0047. The
// servers still speak gRPC and gRPC-Web to outside clients (`buf curl`, grpcurl).
import type { DescService } from "@bufbuild/protobuf";
import { type Client, createClient, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
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
  const transport = createConnectTransport({
    baseUrl: options.baseUrl,
    httpVersion: "2",
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
