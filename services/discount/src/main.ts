// The discount service: campaigns and redemptions over RPC, claims group-committed, a cache of
// campaigns kept by every replica's CampaignChanged (and re-read from the database on a timer
// and after reconnects), counters announced at most 10 a second, and the consumer that marks
// redemptions credited. Start, stop and draining are packages/service's.
import { DiscountService } from "@ovation/proto/gen/ovation/discount/v1/discount_pb.ts";
import { WalletService } from "@ovation/proto/gen/ovation/wallet/v1/wallet_pb.ts";
import { createServiceClient } from "@ovation/server";
import { defineService, runService, serve } from "@ovation/service";
import { discountServiceImpl } from "./api/discount-service.ts";
import { CampaignCache } from "./app/campaign-cache.ts";
import { RedeemThrottle } from "./app/redeem.ts";
import { WatchSlots } from "./app/watch-campaign.ts";
import { walletBudgets } from "./clients/wallet.ts";
import { discountConfigSchema, discountServiceName } from "./config.ts";
import { creditConsumer } from "./events/credit-consumer.ts";
import { campaignStore } from "./store/campaign-store.ts";
import { discountMigrations } from "./store/migrations.ts";

export { announceIntervalMs } from "./store/campaign-store.ts";

export const discountService = defineService({
  name: discountServiceName,
  config: discountConfigSchema,
  database: { schema: "discount", migrations: discountMigrations },
  publishes: true,
  build({ config, orm, bus, logger, consumerSettings }) {
    const batch = { batchMax: config.DISCOUNT_BATCH_MAX, queueMax: config.DISCOUNT_QUEUE_MAX };
    const { store, announce, announcer } = campaignStore(orm, batch, logger);
    const cache = new CampaignCache(store, logger, {
      revalidateEveryMs: config.DISCOUNT_CACHE_REVALIDATE_MS,
    });
    const throttle = new RedeemThrottle({
      userRedeemsPerMinute: config.DISCOUNT_USER_REDEEMS_PER_MINUTE,
      userUnknownPerHour: config.DISCOUNT_USER_UNKNOWN_PER_HOUR,
      addressUnknownPerHour: config.DISCOUNT_ADDRESS_UNKNOWN_PER_HOUR,
    });
    // Budgets are funded with the admin's own token, per call: no service client here.
    const fund = walletBudgets(createServiceClient(WalletService, { baseUrl: config.WALLET_URL }));
    const slots = new WatchSlots({
      perUser: config.DISCOUNT_WATCHES_PER_USER,
      total: config.DISCOUNT_WATCHES_MAX,
    });
    const api = { store, cache, throttle, logger, announce, assets: config.DISCOUNT_ASSETS, fund, slots };
    return {
      rpc: {
        services: [DiscountService],
        routes: (router) => router.service(DiscountService, discountServiceImpl(api)),
      },
      consumers: [creditConsumer(store, consumerSettings)],
      components: [
        { name: "campaign cache", start: () => cache.start(bus), stop: () => cache.stop() },
        announcer,
      ],
      expose: { store, cache, slots },
    };
  },
});

export const startDiscount = (env: Record<string, string | undefined> = process.env) =>
  runService(discountService, env);
export type DiscountApp = Awaited<ReturnType<typeof startDiscount>>;

if (import.meta.main) await serve(discountService);
