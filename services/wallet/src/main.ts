// Wallet service wiring, top to bottom: config, database, event bus, outbox relay, hold
// timers, RPC server. `startWallet` is also what the integration tests start in-process.
import { createStatementVerifier, createTokenVerifier, statementPurposes } from "@ovation/auth";
import { loadConfig, tokenVerifierSettings } from "@ovation/config";
import { type Database, nativePool, openDatabase } from "@ovation/db";
import {
  ConsumerRunner,
  connectServiceBus,
  DlqAdmin,
  type DlqMover,
  dlqServiceImpl,
  type EventBus,
  type OutboxRelay,
  startDlqMover,
  startOutboxRelay,
} from "@ovation/events";
import { type Jobs, prepareJobs, startJobs } from "@ovation/jobs";
import { DlqService } from "@ovation/proto/gen/ovation/dlq/v1/dlq_pb.ts";
import type { GiftSentSchema } from "@ovation/proto/gen/ovation/gift/v1/events_pb.ts";
import { WalletService } from "@ovation/proto/gen/ovation/wallet/v1/wallet_pb.ts";
import { closeOnSignals, createLogger, type Logger, type RunningServer, startServer } from "@ovation/server";
import { walletServiceImpl } from "./api/wallet-service.ts";
import { expireDueHolds, expireHold, holdJobs } from "./app/holds.ts";
import { type WalletCliConfig, type WalletConfig, walletConfigSchema, walletServiceName } from "./config.ts";
import { hostCreditConsumer } from "./events/host-credit-consumer.ts";
import { promotionCreditConsumer } from "./events/promotion-credit-consumer.ts";
import { purchaseCreditConsumer } from "./events/purchase-credit-consumer.ts";
import { walletEntities } from "./store/entities.ts";
import { FactStore } from "./store/fact-store.ts";
import { LedgerStore } from "./store/ledger-store.ts";
import { walletMigrations } from "./store/migrations.ts";

export { auditLedger } from "./app/audit.ts";

export const walletSchema = "wallet";

export interface Wallet {
  config: WalletConfig;
  server: RunningServer;
  store: LedgerStore;
  orm: Database;
  bus: EventBus;
  relay: OutboxRelay;
  hostCredit: ConsumerRunner<typeof GiftSentSchema>;
  logger: Logger;
  close(): Promise<void>;
}

export async function openWalletDatabase(config: WalletCliConfig, migrate = true): Promise<Database> {
  return openDatabase({
    url: config.DATABASE_URL,
    schema: walletSchema,
    entities: walletEntities,
    migrations: walletMigrations,
    poolMax: config.DATABASE_POOL_MAX,
    migrate,
  });
}

export async function startWallet(env: Record<string, string | undefined> = process.env): Promise<Wallet> {
  const config = loadConfig(walletConfigSchema, env);
  const logger = createLogger(walletServiceName, config.LOG_LEVEL);
  const orm = await openWalletDatabase(config);
  const store = new LedgerStore(orm, config.WALLET_SYSTEM_SHARDS, {
    batchMax: config.WALLET_TRANSFER_BATCH_MAX,
    queueMax: config.WALLET_TRANSFER_QUEUE_MAX,
  });
  await store.ensureAssets(config.WALLET_ASSETS);

  const bus = await connectServiceBus(walletServiceName, config);
  const relay = await startOutboxRelay({
    orm,
    databaseUrl: config.DATABASE_URL,
    schema: walletSchema,
    bus,
    logger,
  });
  const pool = await nativePool(orm);
  let jobs: Jobs | undefined;
  if (config.WALLET_RUN_CONSUMERS) {
    jobs = await startJobs({
      pool,
      logger,
      crontab: holdJobs.sweepCrontab,
      tasks: {
        [holdJobs.expireTask]: (payload) => expireHold(store, (payload as { holdId: string }).holdId),
        [holdJobs.sweepTask]: async () => {
          const expired = await expireDueHolds(store);
          if (expired > 0) logger.info({ expired }, "released expired holds the sweep found");
        },
      },
    });
  } else {
    // An API-only replica schedules hold timers, so the job schema must exist.
    await prepareJobs({ pool, logger });
  }
  const hostCredit = new ConsumerRunner(
    hostCreditConsumer(store, config.WALLET_HOST_SHARE_BPS, logger, {
      batchMax: config.WALLET_CREDIT_BATCH_MAX,
      retryBackoffMs: config.EVENTS_RETRY_BACKOFF_MS,
      ackWaitMs: config.EVENTS_ACK_WAIT_MS,
    }),
    { bus, orm, logger },
  );
  const facts = new FactStore();
  const promotionCredit = new ConsumerRunner(
    promotionCreditConsumer(store, facts, {
      batchMax: config.WALLET_CREDIT_BATCH_MAX,
      retryBackoffMs: config.EVENTS_RETRY_BACKOFF_MS,
      ackWaitMs: config.EVENTS_ACK_WAIT_MS,
    }),
    { bus, orm, logger },
  );
  const purchases = {
    // The card processor's key only: no other key, and no key the order service holds, signs a payment.
    verifyPayment: createStatementVerifier(config.JWKS_FILE.jwks, "card", statementPurposes.paymentResult),
    cardAsset: config.WALLET_CARD_ASSET,
    coinPriceMin: config.WALLET_COIN_PRICE_MIN,
  };
  const purchaseCredit = new ConsumerRunner(
    purchaseCreditConsumer(store, facts, purchases, {
      batchMax: config.WALLET_CREDIT_BATCH_MAX,
      retryBackoffMs: config.EVENTS_RETRY_BACKOFF_MS,
      ackWaitMs: config.EVENTS_ACK_WAIT_MS,
    }),
    { bus, orm, logger },
  );
  let mover: DlqMover | undefined;
  if (config.WALLET_RUN_CONSUMERS) {
    await hostCredit.start();
    await promotionCredit.start();
    await purchaseCredit.start();
    mover = await startDlqMover(bus, logger);
  }

  const verifyToken = createTokenVerifier(tokenVerifierSettings(config));
  const server = await startServer({
    name: walletServiceName,
    host: config.HOST,
    port: config.PORT,
    logger,
    verifyToken,
    services: [WalletService, DlqService],
    routes: (router) => {
      router.service(WalletService, walletServiceImpl({ store, facts, verifyToken }));
      router.service(DlqService, dlqServiceImpl(new DlqAdmin(bus)));
    },
    ready: async () => (await orm.isConnected()) && !bus.connection.isClosed(),
  });

  return {
    config,
    server,
    store,
    orm,
    bus,
    relay,
    hostCredit,
    logger,
    async close() {
      await server.close();
      await jobs?.stop();
      await hostCredit.stop();
      await promotionCredit.stop();
      await purchaseCredit.stop();
      await mover?.stop();
      await relay.stop();
      await bus.close();
      await orm.close();
    },
  };
}

if (import.meta.main) closeOnSignals(await startWallet());
