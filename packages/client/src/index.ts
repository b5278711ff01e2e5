// @ovation/client: the gateway from an app or a web page. `createOvationClient` gives typed REST
// calls (`api`, openapi-fetch over the types generated from the gateway's OpenAPI document) and
// live channels (`channels`, one WebSocket opened on the first subscription). Runs on Node 22+
// and in browsers: it uses only fetch, WebSocket, URL and timers.
import { type BackoffOptions, defaultBackoff } from "./backoff.ts";
import { ChannelClient, type WebSocketConstructor } from "./channels.ts";
import type { components } from "./gen/api.ts";
import { createRestClient, type RestClient } from "./rest.ts";
import type { TokenSource } from "./token.ts";

export interface OvationClientOptions {
  /** The gateway's origin, for example http://127.0.0.1:8080 ("/" in a page it serves). */
  baseUrl: string;
  /** The bearer token, or a function asked before every request and every socket connect. */
  token?: TokenSource;
  /** Reconnect delays of the channel socket (default 250 ms doubling up to 10 s, with jitter). */
  reconnect?: BackoffOptions;
  /** The channel socket's ping interval; a silent socket is replaced after it (default 15 s). */
  heartbeatIntervalMs?: number;
  fetch?: (request: Request) => Promise<Response>;
  WebSocket?: WebSocketConstructor;
}

export interface OvationClient {
  /** Typed REST calls: `api.GET("/api/rooms/{roomId}", { params: { path: { roomId } } })`. */
  api: RestClient;
  /** Live channels: `channels.subscribe(\`room:${roomId}\`, (message) => …)`. */
  channels: ChannelClient;
  /** Closes the channel socket (REST calls need no closing). */
  close(): Promise<void>;
}

export function createOvationClient(options: OvationClientOptions): OvationClient {
  // Kept with any path prefix the gateway is served under, less a trailing slash.
  const baseUrl = new URL(options.baseUrl, pageHref()).href.replace(/\/+$/, "");
  const api = createRestClient({ baseUrl, token: options.token, fetch: options.fetch });
  const channels = new ChannelClient({
    url: baseUrl,
    token: options.token,
    reconnect: options.reconnect ?? defaultBackoff,
    heartbeatIntervalMs: options.heartbeatIntervalMs,
    WebSocket: options.WebSocket,
  });
  return { api, channels, close: () => channels.close() };
}

const pageHref = () => (globalThis as { location?: { href: string } }).location?.href;

export { type BackoffOptions, backoffDelayMs } from "./backoff.ts";
export {
  ChannelClient,
  type ChannelClientOptions,
  ChannelError,
  type ChannelEvents,
  type ChannelKind,
  type ChannelMessage,
  type ChannelName,
  type ConnectionStatus,
  type MessageOf,
  type SubscribeOptions,
  type Subscription,
  socketUrl,
  type WebSocketConstructor,
} from "./channels.ts";
export type { components, paths } from "./gen/api.ts";
export { operations } from "./gen/routes.ts";
export { channelKinds, closeCodes } from "./gen/socket.ts";
export {
  ApiError,
  createRestClient,
  type ErrorBody,
  type ErrorCode,
  ok,
  type RestClient,
  type RestOptions,
} from "./rest.ts";
export type { TokenSource } from "./token.ts";

/** A schema of the gateway's document by name: `Schema<"ovation.gift.v1.Room">`. */
export type Schema<Name extends keyof components["schemas"]> = components["schemas"][Name];
