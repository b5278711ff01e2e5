// Typed REST calls: openapi-fetch over the `paths` type generated from the gateway's OpenAPI
// document (src/gen/api.ts), so every route, its parameters, body and answer are typed, and a
// route the gateway does not serve does not compile. The client adds the bearer token; errors
// stay values (`{ data, error, response }`) unless the caller prefers `ok()`, which throws.
import createFetchClient, { type Client } from "openapi-fetch";
import type { components, paths } from "./gen/api.ts";
import { resolveToken, type TokenSource } from "./token.ts";

export type RestClient = Client<paths>;

/** The gateway's error body: `code` is the Connect code in snake_case. */
export type ErrorBody = components["schemas"]["Error"];
export type ErrorCode = ErrorBody["code"];

export interface RestOptions {
  /** The gateway's origin, for example http://127.0.0.1:8080. */
  baseUrl: string;
  token?: TokenSource;
  /** Replaces the global fetch (tests, instrumentation). */
  fetch?: (request: Request) => Promise<Response>;
}

export function createRestClient(options: RestOptions): RestClient {
  const client = createFetchClient<paths>({
    baseUrl: options.baseUrl,
    ...(options.fetch === undefined ? {} : { fetch: options.fetch }),
  });
  client.use({
    async onRequest({ request }) {
      // A header the caller set for this one request wins (acting as someone else in a test).
      if (request.headers.has("authorization")) return request;
      const token = await resolveToken(options.token);
      if (token !== undefined) request.headers.set("authorization", `Bearer ${token}`);
      return request;
    },
  });
  return client;
}

/** A refused call: the HTTP status, the gateway's code and message, and when to retry. */
export class ApiError extends Error {
  override readonly name = "ApiError";
  readonly status: number;
  /** The Connect code; "unknown" when the body was not the gateway's error JSON. */
  readonly code: ErrorCode;
  readonly details: ErrorBody["details"];
  /** Seconds from Retry-After (429, 503): retry the same request, with the same idempotency key. */
  readonly retryAfterSeconds: number | undefined;

  constructor(response: Response, body: unknown) {
    const error = isErrorBody(body) ? body : undefined;
    super(error?.message ?? `HTTP ${response.status}`);
    this.status = response.status;
    this.code = error?.code ?? "unknown";
    this.details = error?.details ?? [];
    const retryAfter = Number(response.headers.get("retry-after") ?? Number.NaN);
    this.retryAfterSeconds = Number.isFinite(retryAfter) ? retryAfter : undefined;
  }
}

function isErrorBody(body: unknown): body is ErrorBody {
  return (
    typeof body === "object" &&
    body !== null &&
    typeof (body as ErrorBody).code === "string" &&
    typeof (body as ErrorBody).message === "string"
  );
}

/**
 * The answer's data, or an ApiError: `const room = await ok(api.GET("/api/rooms/{roomId}", …))`.
 */
export async function ok<Data>(
  call: Promise<{ data?: Data; error?: unknown; response: Response }>,
): Promise<Data> {
  const { data, error, response } = await call;
  if (error !== undefined || !response.ok) throw new ApiError(response, error);
  return data as Data;
}
