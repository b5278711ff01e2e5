// Gateway settings. Upstream URLs are optional: a service whose URL is not set is simply not
// routed (its REST routes are not mounted and /readyz does not wait for it). DATABASE_URL is
// optional the same way: without it there are no notifications (no consumers, no
// GET /api/notifications, nothing pushed on the `user` channel as "notification").
import type { DescService } from "@bufbuild/protobuf";
import {
  databaseUrl,
  issuerKeyFileVariable,
  poolMaxVariable,
  portVariable,
  serviceConfigSchema,
  serviceKeyFileVariable,
  serviceSchema,
  z,
} from "@ovation/config";
import { DiscountService } from "@ovation/proto/gen/ovation/discount/v1/discount_pb.ts";
import { DlqService } from "@ovation/proto/gen/ovation/dlq/v1/dlq_pb.ts";
import { GiftService } from "@ovation/proto/gen/ovation/gift/v1/gift_pb.ts";
import { OrderService } from "@ovation/proto/gen/ovation/order/v1/order_pb.ts";
import { PkService } from "@ovation/proto/gen/ovation/pk/v1/pk_pb.ts";
import { WalletService } from "@ovation/proto/gen/ovation/wallet/v1/wallet_pb.ts";
import type { UpstreamSpec } from "./rest/upstream.ts";

/** The gateway's identity: its key id is service:gateway:<version>. */
export const gatewayServiceName = "gateway";
const devTokens = z.stringbool().default(false);

const boundedInteger = (min: number, max: number, fallback: number) =>
  z.coerce.number().int().min(min).max(max).default(fallback);

const settingsSchema = serviceConfigSchema
  .extend({
    PORT: portVariable(8080),
    /** The gateway's own schema "gateway": user notifications and its consumers' inbox. */
    DATABASE_URL: databaseUrl().optional(),
    /** Connections to DATABASE_URL, besides one LISTEN connection per replica. */
    DATABASE_POOL_MAX: poolMaxVariable("gateway"),
    /** WalletService and DlqService (the wallet process serves both). */
    WALLET_URL: z.url({ protocol: /^https?$/ }).optional(),
    /** GiftService. */
    GIFT_URL: z.url({ protocol: /^https?$/ }).optional(),
    /** PkService. */
    PK_URL: z.url({ protocol: /^https?$/ }).optional(),
    /** DiscountService. */
    DISCOUNT_URL: z.url({ protocol: /^https?$/ }).optional(),
    /**
     * How long a replica trusts a learnt "campaign exhausted" before it forwards one key-less
     * redeem of that code to check it again (decision 0034): the longest it refuses a campaign
     * that has slots again when no CampaignChanged event says so.
     */
    DISCOUNT_EXHAUSTED_REVALIDATE_MS: boundedInteger(100, 3_600_000, 1_000),
    /** Codes whose "campaign exhausted" a replica remembers at most; the oldest is forgotten. */
    DISCOUNT_EXHAUSTED_CODES_MAX: boundedInteger(1, 1_000_000, 10_000),
    /** OrderService (the shop). */
    ORDER_URL: z.url({ protocol: /^https?$/ }).optional(),
    /** Enables POST /api/auth/token, which mints tokens for anyone: development and demos only. */
    OVATION_DEV_TOKENS: devTokens,
    /**
     * The user-token issuer's private key, which signs dev tokens. Only with OVATION_DEV_TOKENS:
     * in production an identity provider issues tokens and the gateway holds no issuer key.
     */
    TOKEN_ISSUER_KEY_FILE: issuerKeyFileVariable.optional(),
    /** The gateway forwards callers' tokens and signs none of its own; a key given must be its own. */
    SERVICE_KEY_FILE: serviceKeyFileVariable(gatewayServiceName).optional(),
    /** Lifetime of tokens minted by POST /api/auth/token. */
    DEV_TOKEN_TTL_SECONDS: boundedInteger(60, 7 * 24 * 3600, 3600),
    /** Deadline of every upstream call, counted from when the call is admitted. */
    UPSTREAM_TIMEOUT_MS: boundedInteger(100, 60_000, 5_000),
    /** Calls in flight to one upstream from this gateway; more wait in the queue below. */
    UPSTREAM_INFLIGHT_MAX: boundedInteger(1, 10_000, 256),
    /** Calls that may wait for an in-flight slot; past it the answer is 503 with Retry-After. */
    UPSTREAM_QUEUE_MAX: boundedInteger(0, 100_000, 512),
    /** Longest wait for an in-flight slot before a 503 with Retry-After. */
    UPSTREAM_QUEUE_WAIT_MS: boundedInteger(0, 60_000, 1_000),
    /**
     * Connections the kernel queues for the gateway before it accepts them (capped by
     * net.core.somaxconn). Node's default, 511, drops the SYNs of a flash crowd opening
     * thousands of connections at once, and those clients wait out a connect timeout.
     */
    HTTP_LISTEN_BACKLOG: boundedInteger(1, 65_535, 4_096),
    /**
     * Listening sockets on the one port (SO_REUSEPORT; the kernel spreads new connections over
     * them). Node accepts one connection per listening socket per turn of its event loop (libuv
     * stopped accepting in a loop in 2022), so under load a burst of N new connections waits N
     * turns in the accept queue: 2,000 at once took 9 s to be accepted while the loop was busy.
     * K sockets accept K per turn.
     */
    HTTP_ACCEPT_SOCKETS: boundedInteger(1, 256, 16),
    /**
     * A port for the balancer's probes, GET /healthz and GET /readyz, served by a thread of its
     * own: under a burst the main event loop's turns take up to a second, and a probe there
     * waits for them (decision 0055). Unset: none (the public port serves the probes too).
     */
    MANAGEMENT_PORT: z.coerce.number().int().min(0).max(65_535).optional(),
    /** On the management port, both probes answer 503 once the main loop has not run this long. */
    MANAGEMENT_STALE_MS: boundedInteger(100, 600_000, 5_000),
    /** HTTP/2 connections per upstream; calls go to the least busy one. */
    UPSTREAM_CONNECTIONS: boundedInteger(1, 64, 4),
    /** Write requests (anything but GET) one signed-in user may make per window. */
    RATE_LIMIT_USER_WRITES: boundedInteger(1, 1_000_000, 120),
    /** Write requests one client address may make per window, signed in or not. */
    RATE_LIMIT_IP_WRITES: boundedInteger(1, 1_000_000, 600),
    /** GET requests one signed-in user may make per window: a busy app polling, with room. */
    RATE_LIMIT_USER_READS: boundedInteger(1, 10_000_000, 1_200),
    /** GET requests one client address may make per window (many users may share one NAT). */
    RATE_LIMIT_IP_READS: boundedInteger(1, 10_000_000, 6_000),
    RATE_LIMIT_WINDOW_SECONDS: boundedInteger(1, 3600, 60),
    /** Take the client address from X-Forwarded-For (only behind a proxy that sets it). */
    TRUST_PROXY: z.stringbool().default(false),
    /** WebSocket ping interval; a connection that missed the previous pong is terminated. */
    WS_PING_INTERVAL_MS: boundedInteger(10, 600_000, 30_000),
    /** Time a new WebSocket has to authenticate before it is closed with 4401. */
    WS_AUTH_TIMEOUT_MS: boundedInteger(10, 60_000, 5_000),
    WS_CONNECTIONS_MAX: boundedInteger(1, 1_000_000, 10_000),
    WS_CONNECTIONS_PER_USER_MAX: boundedInteger(1, 1_000, 16),
    /** Sockets one client address may hold before they authenticate; more get HTTP 429. */
    WS_UNAUTHENTICATED_PER_ADDRESS_MAX: boundedInteger(1, 100_000, 8),
    /** Accept `?token=` on the WebSocket URL, for old clients; otherwise it is closed with 4401. */
    WS_QUERY_TOKEN: z.stringbool().default(false),
    WS_SUBSCRIPTIONS_MAX: boundedInteger(1, 1_000, 32),
    /** Bytes queued for one socket above which its updates are dropped. */
    WS_SEND_BUFFER_MAX_BYTES: boundedInteger(1024, 64 * 1024 * 1024, 1024 * 1024),
    /** How long a socket may stay over its send buffer limit before it is closed (1013). */
    WS_SLOW_CLIENT_GRACE_MS: boundedInteger(10, 600_000, 10_000),
    /**
     * How long a subscription waits for this replica's live feeds (JetStream consumers) to be up
     * before it is refused with "unavailable"; NATS reconnects within about a second.
     */
    WS_FEED_WAIT_MS: boundedInteger(0, 60_000, 3_000),
    /**
     * Shortest time between two frames of one room channel: a room's messages since its last
     * frame travel together, so a storm costs each socket at most 1000 / WS_ROOM_TICK_MS frames a
     * second per room. The first message after a quiet tick goes out at once.
     */
    WS_ROOM_TICK_MS: boundedInteger(10, 10_000, 200),
    /** Messages one room frame carries at most; beyond, the smallest gifts are left out and counted. */
    WS_ROOM_BATCH_MAX: boundedInteger(1, 1_000, 20),
  })
  .refine((config) => !config.OVATION_DEV_TOKENS || config.TOKEN_ISSUER_KEY_FILE !== undefined, {
    message: "OVATION_DEV_TOKENS needs TOKEN_ISSUER_KEY_FILE to sign tokens",
    path: ["TOKEN_ISSUER_KEY_FILE"],
  })
  .refine((config) => config.OVATION_DEV_TOKENS || config.TOKEN_ISSUER_KEY_FILE === undefined, {
    message: "only with OVATION_DEV_TOKENS=true: a gateway without dev tokens must not hold the issuer key",
    path: ["TOKEN_ISSUER_KEY_FILE"],
  });

/** OVATION_KEY_DIR hands the gateway the issuer key only when dev tokens are on. */
export const gatewayConfigSchema = serviceSchema(gatewayServiceName, settingsSchema, {
  issuer: (env) => devTokens.safeParse(env.OVATION_DEV_TOKENS).data === true,
});

export type GatewayConfig = z.output<typeof gatewayConfigSchema>;

/** Every service the gateway can route, by the upstream that serves it and that upstream's URL setting. */
export const upstreamServices = [
  { name: "wallet", urlVariable: "WALLET_URL", services: [WalletService, DlqService] },
  { name: "gift", urlVariable: "GIFT_URL", services: [GiftService] },
  { name: "pk", urlVariable: "PK_URL", services: [PkService] },
  { name: "discount", urlVariable: "DISCOUNT_URL", services: [DiscountService] },
  { name: "order", urlVariable: "ORDER_URL", services: [OrderService] },
] as const satisfies readonly { name: string; urlVariable: keyof GatewayConfig; services: DescService[] }[];

/** Which services each upstream URL serves; a service whose URL is unset is not routed. */
export function upstreamSpecs(config: GatewayConfig): UpstreamSpec[] {
  return upstreamServices.flatMap(({ name, urlVariable, services }) => {
    const baseUrl = config[urlVariable];
    return baseUrl === undefined ? [] : [{ name, baseUrl, services }];
  });
}

/** Bounds of each upstream: in flight, queued, waiting, its deadline and connections. */
export const upstreamLimits = (config: GatewayConfig) => ({
  timeoutMs: config.UPSTREAM_TIMEOUT_MS,
  inFlightMax: config.UPSTREAM_INFLIGHT_MAX,
  queueMax: config.UPSTREAM_QUEUE_MAX,
  queueWaitMs: config.UPSTREAM_QUEUE_WAIT_MS,
  connections: config.UPSTREAM_CONNECTIONS,
});

/** The WebSocket hub's limits. */
export const hubLimits = (config: GatewayConfig) => ({
  connectionsMax: config.WS_CONNECTIONS_MAX,
  connectionsPerUserMax: config.WS_CONNECTIONS_PER_USER_MAX,
  unauthenticatedPerAddressMax: config.WS_UNAUTHENTICATED_PER_ADDRESS_MAX,
  queryToken: config.WS_QUERY_TOKEN,
  trustProxy: config.TRUST_PROXY,
  pingIntervalMs: config.WS_PING_INTERVAL_MS,
  subscriptionsMax: config.WS_SUBSCRIPTIONS_MAX,
  sendBufferMaxBytes: config.WS_SEND_BUFFER_MAX_BYTES,
  slowClientGraceMs: config.WS_SLOW_CLIENT_GRACE_MS,
  authTimeoutMs: config.WS_AUTH_TIMEOUT_MS,
  feedWaitMs: config.WS_FEED_WAIT_MS,
  roomTickMs: config.WS_ROOM_TICK_MS,
  roomBatchMax: config.WS_ROOM_BATCH_MAX,
});
