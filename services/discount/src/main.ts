// Discount service wiring, top to bottom: config, database, event bus, outbox relay, campaign
// cache (with every replica's CampaignChanged), claim batching, credit tracking, RPC server.
// `startDiscount` is what tests start in-process.
import { createTokenVerifier } from "@ovation/auth";
import { loadConfig, tokenVerifierSettings } from "@ovation/config";
import { type Database, openDatabase } from "@ovation/db";
import {
  CoalescedAnnouncer,
  ConsumerRunner,
  connectServiceBus,
  type EventBus,
  enqueueEvents,
  type OutboxRelay,
  startDlqMover,
  startOutboxRelay,
} from "@ovation/events";
import { DiscountService } from "@ovation/proto/gen/ovation/discount/v1/discount_pb.ts";
import { WalletService } from "@ovation/proto/gen/ovation/wallet/v1/wallet_pb.ts";
import {
  closeOnSignals,
  createLogger,
  createServiceClient,
  type Logger,
  type RunningServer,
  startServer,
} from "@ovation/server";
import { discountServiceImpl } from "./api/discount-service.ts";
import { walletBudgets } from "./app/budgets.ts";
import { CampaignCache } from "./app/campaign-cache.ts";
import { campaignChangedEvent, redemptionEvent } from "./app/messages.ts";
import { RedeemThrottle } from "./app/redeem.ts";
import { type DiscountConfig, discountConfigSchema, discountServiceName } from "./config.ts";
import { creditConsumer } from "./events/credit-consumer.ts";
import { DiscountStore } from "./store/discount-store.ts";
import { discountMigrations } from "./store/migrations.ts";

export const discountSchema = "discount";
/** Campaign counters are announced at most this often per campaign (10 a second). */
export const announceIntervalMs = 100;

export interface DiscountApp {
  config: DiscountConfig;
  server: RunningServer;
  store: DiscountStore;
  orm: Database;
  bus: EventBus;
  relay: OutboxRelay;
  cache: CampaignCache;
  logger: Logger;
  close(): Promise<void>;
}

export async function startDiscount(
  env: Record<string, string | undefined> = process.env,
): Promise<DiscountApp> {
  const config = loadConfig(discountConfigSchema, env);
  const logger = createLogger(discountServiceName, config.LOG_LEVEL);
  const orm = await openDatabase({
    url: config.DATABASE_URL,
    schema: discountSchema,
    entities: [],
    migrations: discountMigrations,
    poolMax: config.DATABASE_POOL_MAX,
  });
  // Claims announce through the announcer; the announcer reads campaigns through the store.
  const announcer: CoalescedAnnouncer = new CoalescedAnnouncer({
    orm,
    logger: logger.child({ component: "campaign-announcer" }),
    async announce(em, ids) {
      const { claimed, later } = await store.claimAnnouncement(em, ids, announceIntervalMs);
      await enqueueEvents(em, claimed.map(campaignChangedEvent));
      return later;
    },
  });
  const store = new DiscountStore(
    orm,
    { batchMax: config.DISCOUNT_BATCH_MAX, queueMax: config.DISCOUNT_QUEUE_MAX },
    {
      eventsOf: (redeemed) => redeemed.map(redemptionEvent),
      afterClaims: (em, ids) => announcer.changed(em, ids),
    },
  );
  const cache = new CampaignCache(store, logger);
  const bus = await connectServiceBus(discountServiceName, config);
  const relay = await startOutboxRelay({
    orm,
    databaseUrl: config.DATABASE_URL,
    schema: discountSchema,
    bus,
    logger,
  });
  await cache.start(bus);
  const credits = new ConsumerRunner(
    creditConsumer(store, {
      retryBackoffMs: config.EVENTS_RETRY_BACKOFF_MS,
      ackWaitMs: config.EVENTS_ACK_WAIT_MS,
    }),
    { bus, orm, logger },
  );
  if (config.DISCOUNT_RUN_CONSUMERS) await credits.start();
  const mover = await startDlqMover(bus, logger);
  const throttle = new RedeemThrottle({
    userRedeemsPerMinute: config.DISCOUNT_USER_REDEEMS_PER_MINUTE,
    userUnknownPerHour: config.DISCOUNT_USER_UNKNOWN_PER_HOUR,
    addressUnknownPerHour: config.DISCOUNT_ADDRESS_UNKNOWN_PER_HOUR,
  });
  const server = await startServer({
    name: discountServiceName,
    host: config.HOST,
    port: config.PORT,
    logger,
    verifyToken: createTokenVerifier(tokenVerifierSettings(config)),
    services: [DiscountService],
    routes: (router) =>
      router.service(
        DiscountService,
        discountServiceImpl({
          store,
          cache,
          throttle,
          logger,
          announce: (em, ids) => announcer.changed(em, ids),
          assets: config.DISCOUNT_ASSETS,
          fund: walletBudgets(createServiceClient(WalletService, { baseUrl: config.WALLET_URL })),
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
    cache,
    logger,
    async close() {
      await server.close();
      announcer.stop();
      await credits.stop();
      await mover.stop();
      await cache.stop();
      await relay.stop();
      await bus.close();
      await orm.close();
    },
  };
}

if (import.meta.main) closeOnSignals(await startDiscount());
