// The wallet: the ledger's RPC API (and the DLQ admin), its consumers of gift debits, promotion
// redemptions and coin-pack completions, and hold expiry on the durable timers. Everything
// else (start and stop order, draining, signals) is packages/service's.
import { DlqAdmin, dlqServiceImpl } from "@ovation/events";
import { DlqService } from "@ovation/proto/gen/ovation/dlq/v1/dlq_pb.ts";
import { WalletService } from "@ovation/proto/gen/ovation/wallet/v1/wallet_pb.ts";
import { defineService, runService, serve } from "@ovation/service";
import { walletServiceImpl } from "./api/wallet-service.ts";
import { holdTimers } from "./app/holds.ts";
import { purchaseSettings } from "./app/purchases.ts";
import { walletConfigSchema, walletServiceName } from "./config.ts";
import { hostCreditConsumer } from "./events/host-credit-consumer.ts";
import { promotionCreditConsumer } from "./events/promotion-credit-consumer.ts";
import { purchaseCreditConsumer } from "./events/purchase-credit-consumer.ts";
import { walletDatabase } from "./store/database.ts";
import { FactStore } from "./store/fact-store.ts";
import { LedgerStore } from "./store/ledger-store.ts";

export { auditLedger } from "./app/audit.ts";
export { openWalletDatabase } from "./store/database.ts";

export const walletService = defineService({
  name: walletServiceName,
  config: walletConfigSchema,
  database: walletDatabase,
  publishes: true,
  async build({ config, orm, bus, logger, verifyToken, consumerSettings }) {
    const store = new LedgerStore(orm, config.WALLET_SYSTEM_SHARDS, {
      batchMax: config.WALLET_TRANSFER_BATCH_MAX,
      queueMax: config.WALLET_TRANSFER_QUEUE_MAX,
    });
    await store.ensureAssets(config.WALLET_ASSETS);
    const facts = new FactStore();
    const consumer = { ...consumerSettings, batchMax: config.WALLET_CREDIT_BATCH_MAX };
    return {
      rpc: {
        services: [WalletService, DlqService],
        routes: (router) => {
          router.service(WalletService, walletServiceImpl({ store, facts, verifyToken }));
          router.service(DlqService, dlqServiceImpl(new DlqAdmin(bus)));
        },
      },
      consumers: [
        hostCreditConsumer(store, config.WALLET_HOST_SHARE_BPS, logger, consumer),
        promotionCreditConsumer(store, facts, consumer),
        purchaseCreditConsumer(store, facts, purchaseSettings(config), consumer),
      ],
      jobs: holdTimers(store, logger),
      expose: { store, facts },
    };
  },
});

export const startWallet = (env: Record<string, string | undefined> = process.env) =>
  runService(walletService, env);
export type Wallet = Awaited<ReturnType<typeof startWallet>>;

if (import.meta.main) await serve(walletService);
