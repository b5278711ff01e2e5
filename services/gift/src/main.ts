// Gift service wiring, top to bottom: config, database, event bus, outbox relay, catalog and room caches,
// gift-log and discovery consumers, boost timers, wallet and PK clients, RPC server. `startGift`
// is what tests start in-process.
import { bearerInterceptor, createTokenVerifier, importSigningKey, serviceTokenSource } from "@ovation/auth";
import { loadConfig, tokenVerifierSettings } from "@ovation/config";
import { type Database, nativePool, openDatabase } from "@ovation/db";
import {
  ConsumerRunner,
  connectServiceBus,
  type EventBus,
  type OutboxRelay,
  startDlqMover,
  startOutboxRelay,
} from "@ovation/events";
import { type Jobs, startJobs } from "@ovation/jobs";
import { GiftService } from "@ovation/proto/gen/ovation/gift/v1/gift_pb.ts";
import { PkService } from "@ovation/proto/gen/ovation/pk/v1/pk_pb.ts";
import type { BoostPurchasedSchema } from "@ovation/proto/gen/ovation/wallet/v1/events_pb.ts";
import { WalletService } from "@ovation/proto/gen/ovation/wallet/v1/wallet_pb.ts";
import {
  closeOnSignals,
  createLogger,
  createServiceClient,
  type Logger,
  type RunningServer,
  startServer,
} from "@ovation/server";
import { giftServiceImpl } from "./api/gift-service.ts";
import { type BoostDeps, expireBoosts } from "./app/boosts.ts";
import { CatalogCache } from "./app/catalog.ts";
import { WalletPayments } from "./app/payments.ts";
import { RoomCache } from "./app/rooms.ts";
import { type GiftConfig, giftConfigSchema, giftServiceName } from "./config.ts";
import { discoveryConsumer } from "./events/discovery-consumer.ts";
import { giftLogConsumer } from "./events/gift-log-consumer.ts";
import { boostJobs, DiscoveryStore } from "./store/discovery-store.ts";
import { giftEntities } from "./store/entities.ts";
import { GiftStore } from "./store/gift-store.ts";
import { giftMigrations } from "./store/migrations.ts";

export const giftSchema = "gift";

export interface GiftApp {
  config: GiftConfig;
  server: RunningServer;
  store: GiftStore;
  orm: Database;
  bus: EventBus;
  relay: OutboxRelay;
  giftLog: ConsumerRunner<typeof import("@ovation/proto/gen/ovation/gift/v1/events_pb.ts").GiftSentSchema>;
  discovery: ConsumerRunner<typeof BoostPurchasedSchema>;
  boosts: BoostDeps;
  jobs: Jobs;
  logger: Logger;
  close(): Promise<void>;
}

export async function startGift(env: Record<string, string | undefined> = process.env): Promise<GiftApp> {
  const config = loadConfig(giftConfigSchema, env);
  const logger = createLogger(giftServiceName, config.LOG_LEVEL);
  const serviceKey = await importSigningKey(config.SERVICE_KEY_FILE.jwk);
  const orm = await openDatabase({
    url: config.DATABASE_URL,
    schema: giftSchema,
    entities: giftEntities,
    migrations: giftMigrations,
    poolMax: config.DATABASE_POOL_MAX,
  });
  const store = new GiftStore(orm, {
    comboWindowMs: config.GIFT_COMBO_WINDOW_MS,
    claimBatch: { batchMax: config.GIFT_BATCH_MAX, queueMax: config.GIFT_QUEUE_MAX },
  });
  const bus = await connectServiceBus(giftServiceName, config);
  const relay = await startOutboxRelay({
    orm,
    databaseUrl: config.DATABASE_URL,
    schema: giftSchema,
    bus,
    logger,
  });
  const catalog = new CatalogCache(store, logger);
  await catalog.start(bus);
  const rooms = new RoomCache(store, logger);
  await rooms.start(bus);
  const consumerSettings = {
    retryBackoffMs: config.EVENTS_RETRY_BACKOFF_MS,
    ackWaitMs: config.EVENTS_ACK_WAIT_MS,
  };
  const giftLog = new ConsumerRunner(giftLogConsumer(store, consumerSettings), { bus, orm, logger });
  await giftLog.start();
  const discoveryStore = new DiscoveryStore(orm);
  const discovery = new ConsumerRunner(discoveryConsumer(discoveryStore, consumerSettings), {
    bus,
    orm,
    logger,
  });
  await discovery.start();
  const jobs = await startJobs({
    pool: await nativePool(orm),
    logger,
    tasks: { [boostJobs.expire]: () => expireBoosts(discoveryStore).then(() => undefined) },
  });
  const mover = await startDlqMover(bus, logger);

  // The wallet knows this caller as "gift" from the key that signed its token, nothing else.
  const serviceToken = bearerInterceptor(
    serviceTokenSource(giftServiceName, serviceKey, config.JWT_AUDIENCE),
  );
  const wallet = createServiceClient(WalletService, {
    baseUrl: config.WALLET_URL,
    interceptors: [serviceToken],
  });
  const payments = new WalletPayments(wallet, {
    batchMax: config.GIFT_BATCH_MAX,
    queueMax: config.GIFT_QUEUE_MAX,
  });
  const boosts: BoostDeps = {
    gifts: store,
    discovery: discoveryStore,
    payments,
    pk:
      config.PK_URL === undefined
        ? undefined
        : createServiceClient(PkService, { baseUrl: config.PK_URL, interceptors: [serviceToken] }),
  };
  const server = await startServer({
    name: giftServiceName,
    host: config.HOST,
    port: config.PORT,
    logger,
    verifyToken: createTokenVerifier(tokenVerifierSettings(config)),
    services: [GiftService],
    routes: (router) =>
      router.service(
        GiftService,
        giftServiceImpl({
          store,
          catalog,
          rooms,
          payments,
          boosts,
        }),
      ),
    ready: async () => (await orm.isConnected()) && !bus.connection.isClosed(),
  });

  return {
    config,
    server,
    store,
    orm,
    bus,
    relay,
    giftLog,
    discovery,
    boosts,
    jobs,
    logger,
    async close() {
      await server.close();
      await giftLog.stop();
      await discovery.stop();
      await jobs.stop();
      await mover.stop();
      await catalog.stop();
      await rooms.stop();
      await relay.stop();
      await bus.close();
      await orm.close();
    },
  };
}

if (import.meta.main) closeOnSignals(await startGift());
