// Gateway wiring, top to bottom: config, token verifier, upstreams and the REST route table
// built from their google.api.http annotations, the WebSocket hub and its JetStream feeds, the
// notifications (own schema, durable consumers, LISTEN for live pushes) when DATABASE_URL is
// set, one HTTP/1.1 server. `startGateway` is also what the tests start in-process. No business
// rules live here: every annotated REST call is one upstream RPC, and the services authorize it
// again; GET /api/notifications reads the gateway's own table.
import http from "node:http";
import type { DescService } from "@bufbuild/protobuf";
import { createTokenVerifier, createUserTokenSigner, importSigningKey } from "@ovation/auth";
import { loadConfig } from "@ovation/config";
import { openDatabase } from "@ovation/db";
import { ConsumerRunner, connectServiceBus, type EventBus, startDlqMover } from "@ovation/events";
import { DiscountService } from "@ovation/proto/gen/ovation/discount/v1/discount_pb.ts";
import { DlqService } from "@ovation/proto/gen/ovation/dlq/v1/dlq_pb.ts";
import { GiftService } from "@ovation/proto/gen/ovation/gift/v1/gift_pb.ts";
import { OrderService } from "@ovation/proto/gen/ovation/order/v1/order_pb.ts";
import { PkService } from "@ovation/proto/gen/ovation/pk/v1/pk_pb.ts";
import { WalletService } from "@ovation/proto/gen/ovation/wallet/v1/wallet_pb.ts";
import { closeOnSignals, createLogger, type Logger } from "@ovation/server";
import { type GatewayConfig, gatewayConfigSchema, gatewayServiceName } from "./config.ts";
import { boostNotificationConsumer, creditNotificationConsumer } from "./events/notification-consumers.ts";
import { requestUrl } from "./http.ts";
import { createHttpApp, type HttpApp, type HttpAppOptions } from "./http-app.ts";
import { RouteTable } from "./rest/routes.ts";
import { Upstream, type UpstreamSpec } from "./rest/upstream.ts";
import { gatewayMigrations } from "./store/migrations.ts";
import { gatewaySchema, NotificationStore } from "./store/notification-store.ts";
import { FeedConsumer } from "./ws/consumers.ts";
import { feeds } from "./ws/feeds.ts";
import { Hub } from "./ws/hub.ts";
import { NotificationListener } from "./ws/notification-listener.ts";

export interface Gateway {
  config: GatewayConfig;
  url: string;
  port: number;
  hub: Hub;
  routes: RouteTable<Upstream>;
  logger: Logger;
  close(): Promise<void>;
}

/** Time in-flight REST calls get to finish on shutdown. */
const shutdownGraceMs = 10_000;

/** Which services each upstream URL serves; a service whose URL is unset is not routed. */
function upstreamSpecs(config: GatewayConfig): UpstreamSpec[] {
  const specs: [string, string | undefined, DescService[]][] = [
    ["wallet", config.WALLET_URL, [WalletService, DlqService]],
    ["gift", config.GIFT_URL, [GiftService]],
    ["pk", config.PK_URL, [PkService]],
    ["discount", config.DISCOUNT_URL, [DiscountService]],
    ["order", config.ORDER_URL, [OrderService]],
  ];
  return specs.flatMap(([name, baseUrl, services]) =>
    baseUrl === undefined ? [] : [{ name, baseUrl, services }],
  );
}

export async function startGateway(env: Record<string, string | undefined> = process.env): Promise<Gateway> {
  const config = loadConfig(gatewayConfigSchema, env);
  const logger = createLogger(gatewayServiceName, config.LOG_LEVEL);
  const tokenSettings = { issuer: config.JWT_ISSUER, audience: config.JWT_AUDIENCE };
  const verify = createTokenVerifier({
    ...tokenSettings,
    jwks: config.JWKS_FILE.jwks,
    jwksUrl: config.JWKS_URL,
  });
  const sign =
    config.TOKEN_ISSUER_KEY_FILE === undefined
      ? undefined
      : createUserTokenSigner(await importSigningKey(config.TOKEN_ISSUER_KEY_FILE.jwk), tokenSettings);
  const upstreamLimits = {
    timeoutMs: config.UPSTREAM_TIMEOUT_MS,
    inFlightMax: config.UPSTREAM_INFLIGHT_MAX,
    queueMax: config.UPSTREAM_QUEUE_MAX,
    queueWaitMs: config.UPSTREAM_QUEUE_WAIT_MS,
    connections: config.UPSTREAM_CONNECTIONS,
  };
  const upstreams = upstreamSpecs(config).map((spec) => new Upstream(spec, upstreamLimits));
  const routes = new RouteTable(
    upstreams.map((upstream) => ({ services: upstream.services, target: upstream })),
  );
  for (const reason of routes.skipped) logger.info(reason);

  const bus = await connectServiceBus(gatewayServiceName, config);
  const hub = new Hub(
    {
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
    },
    verify,
    logger,
  );
  const feedConsumers = feeds.map((feed) => new FeedConsumer(feed, bus, hub, logger));
  await Promise.all(feedConsumers.map((consumer) => consumer.start()));
  const notifications =
    config.DATABASE_URL === undefined
      ? undefined
      : await startNotifications(config, config.DATABASE_URL, bus, hub, logger);

  const options: HttpAppOptions = {
    routes,
    upstreams,
    verify,
    sign,
    notifications: notifications?.store,
    devTokenTtlSeconds: config.DEV_TOKEN_TTL_SECONDS,
    limits: {
      userWrites: config.RATE_LIMIT_USER_WRITES,
      addressWrites: config.RATE_LIMIT_IP_WRITES,
      userReads: config.RATE_LIMIT_USER_READS,
      addressReads: config.RATE_LIMIT_IP_READS,
      windowSeconds: config.RATE_LIMIT_WINDOW_SECONDS,
    },
    trustProxy: config.TRUST_PROXY,
    ready: () => !bus.connection.isClosed(),
    logger,
  };
  const app: HttpApp = createHttpApp(options);
  // A request may read its body, wait for admission, then run its upstream call.
  const requestTimeoutMs = config.UPSTREAM_TIMEOUT_MS * 2 + config.UPSTREAM_QUEUE_WAIT_MS;
  const server = http.createServer({ requestTimeout: requestTimeoutMs }, app.handle);
  server.on("upgrade", (request, socket, head) => {
    if (requestUrl(request)?.pathname === "/ws") hub.upgrade(request, socket, head);
    else socket.end("HTTP/1.1 404 Not Found\r\nconnection: close\r\ncontent-length: 0\r\n\r\n");
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen({ port: config.PORT, host: config.HOST, backlog: config.HTTP_LISTEN_BACKLOG }, resolve);
  });
  const port = (server.address() as { port: number }).port;
  const url = `http://${config.HOST}:${port}`;
  logger.info({ url, routes: routes.routes.length, upstreams: upstreams.map((u) => u.name) }, "listening");

  let closing: Promise<void> | undefined;
  const close = async () => {
    app.draining = true;
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    server.closeIdleConnections();
    await hub.close();
    await Promise.all(feedConsumers.map((consumer) => consumer.stop()));
    await notifications?.close();
    const deadline = Date.now() + shutdownGraceMs;
    while (app.inFlight > 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
    server.closeAllConnections();
    await closed;
    for (const upstream of upstreams) upstream.close();
    await bus.close();
  };
  return {
    config,
    url,
    port,
    hub,
    routes,
    logger,
    close: () => {
      closing ??= close();
      return closing;
    },
  };
}

interface Notifications {
  store: NotificationStore;
  close(): Promise<void>;
}

/**
 * The gateway's schema, its two durable consumers of wallet events (shared by the replicas:
 * one applies each event) and this replica's LISTEN connection, which pushes every new
 * notification to the user's sockets here. The listener starts first, so notifications the
 * consumers write while catching up are pushed too.
 */
async function startNotifications(
  config: GatewayConfig,
  databaseUrl: string,
  bus: EventBus,
  hub: Hub,
  logger: Logger,
): Promise<Notifications> {
  const orm = await openDatabase({
    url: databaseUrl,
    schema: gatewaySchema,
    entities: [],
    migrations: gatewayMigrations,
    poolMax: config.DATABASE_POOL_MAX,
  });
  const store = new NotificationStore(orm);
  const listener = new NotificationListener({ databaseUrl, schema: gatewaySchema, sink: hub, logger });
  await listener.start();
  const settings = { retryBackoffMs: config.EVENTS_RETRY_BACKOFF_MS, ackWaitMs: config.EVENTS_ACK_WAIT_MS };
  const consumers = [
    new ConsumerRunner(boostNotificationConsumer(store, settings), { bus, orm, logger }),
    new ConsumerRunner(creditNotificationConsumer(store, settings), { bus, orm, logger }),
  ];
  for (const consumer of consumers) await consumer.start();
  // Every consuming process runs its share of the dead-letter mover (0013).
  const mover = await startDlqMover(bus, logger);
  return {
    store,
    async close() {
      for (const consumer of consumers) await consumer.stop();
      await mover.stop();
      await listener.stop();
      await orm.close();
    },
  };
}

if (import.meta.main) closeOnSignals(await startGateway());
