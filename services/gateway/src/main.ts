// The gateway: REST built from the services' google.api.http annotations (every call one
// upstream RPC, authorized again there), the WebSocket hub and its JetStream feeds, and, with
// DATABASE_URL, user notifications (its own schema, two durable consumers, a LISTEN connection
// that pushes them live); the operator's consumer lag and outbox views; and the console's
// assets at /console. Start, stop and draining are packages/service's.

import { databaseProbe } from "@ovation/db";
import { defineService, runService, serve } from "@ovation/service";
import { devTokenSigner } from "./auth-token.ts";
import {
  gatewayConfigSchema,
  gatewayServiceName,
  hubLimits,
  upstreamLimits,
  upstreamSpecs,
} from "./config.ts";
import { notificationParts } from "./notifications.ts";
import { Operations } from "./operations.ts";
import { ExhaustedCodes } from "./rest/exhausted-codes.ts";
import { RouteTable } from "./rest/routes.ts";
import { closeAll, Upstream } from "./rest/upstream.ts";
import { gatewayServer } from "./server.ts";
import { gatewayMigrations } from "./store/migrations.ts";
import { gatewaySchema } from "./store/notification-store.ts";
import { LiveFeeds } from "./ws/consumers.ts";
import { feeds } from "./ws/feeds.ts";
import { Hub } from "./ws/hub.ts";

export const gatewayService = defineService({
  name: gatewayServiceName,
  config: gatewayConfigSchema,
  database: (config) =>
    config.DATABASE_URL === undefined ? undefined : { schema: gatewaySchema, migrations: gatewayMigrations },
  async build({ config, bus, logger, verifyToken, hasDatabase, orm, consumerSettings }) {
    const upstreams = upstreamSpecs(config).map((spec) => new Upstream(spec, upstreamLimits(config)));
    const routes = new RouteTable(
      upstreams.map((upstream) => ({ services: upstream.services, target: upstream })),
    );
    for (const reason of routes.skipped) logger.info(reason);
    const exhausted =
      config.DISCOUNT_URL === undefined
        ? undefined
        : new ExhaustedCodes(
            {
              revalidateMs: config.DISCOUNT_EXHAUSTED_REVALIDATE_MS,
              codesMax: config.DISCOUNT_EXHAUSTED_CODES_MAX,
            },
            logger,
          );
    const liveFeeds = new LiveFeeds();
    const hub = new Hub(hubLimits(config), verifyToken, logger, liveFeeds);
    const feedConsumers = feeds.map((feed) => liveFeeds.consumer(feed, bus, hub, logger));
    const notifications = hasDatabase
      ? notificationParts(
          orm,
          config.DATABASE_DIRECT_URL ?? config.DATABASE_URL!,
          hub,
          logger,
          consumerSettings,
        )
      : undefined;
    const sign = await devTokenSigner(config);
    const operations = new Operations(bus, config.DATABASE_URL);
    const databaseReachable = hasDatabase ? await databaseProbe(orm) : undefined;
    // Not ready until the live feeds are: a socket this replica takes must get every update.
    const ready = async () =>
      !bus.connection.isClosed() &&
      liveFeeds.live &&
      (databaseReachable === undefined || (await databaseReachable()));
    const parts = {
      routes,
      upstreams,
      verify: verifyToken,
      sign,
      notifications: notifications?.store,
      logger,
      ready,
      exhausted,
      operations,
    };
    const server = gatewayServer(config, parts, hub);
    return {
      server,
      components: [
        { name: "upstreams", stop: async () => closeAll(upstreams) },
        { name: "operations", stop: () => operations.close() },
        ...(exhausted === undefined
          ? []
          : [{ name: "exhausted codes", start: () => exhausted.start(bus), stop: () => exhausted.stop() }]),
        ...feedConsumers,
        ...(notifications?.components ?? []),
      ],
      consumers: notifications?.consumers ?? [],
      expose: { hub, routes, exhausted, managementUrl: () => server.managementUrl },
    };
  },
});

export const startGateway = (env: Record<string, string | undefined> = process.env) =>
  runService(gatewayService, env);
export type Gateway = Awaited<ReturnType<typeof startGateway>>;

if (import.meta.main) await serve(gatewayService);
