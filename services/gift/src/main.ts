// The gift service: catalog, rooms, sends and boosts over RPC (paid through the wallet, boosts of
// PK sides checked with the PK service), caches kept by the GIFT stream, the gift-log and
// discovery consumers, and boost expiry on the durable timers. Start, stop and draining are
// packages/service's.
import { GiftService } from "@ovation/proto/gen/ovation/gift/v1/gift_pb.ts";
import { PkService } from "@ovation/proto/gen/ovation/pk/v1/pk_pb.ts";
import { WalletService } from "@ovation/proto/gen/ovation/wallet/v1/wallet_pb.ts";
import { defineService, runService, serve } from "@ovation/service";
import { giftServiceImpl } from "./api/gift-service.ts";
import { type BoostDeps, expireBoosts } from "./app/boosts.ts";
import { CatalogCache } from "./app/catalog.ts";
import { RoomCache } from "./app/rooms.ts";
import type { SendGiftDeps } from "./app/send-gift.ts";
import { PkBattlesClient, pkNotConfigured } from "./clients/pk.ts";
import { WalletPayments } from "./clients/wallet.ts";
import { giftConfigSchema, giftServiceName } from "./config.ts";
import { discoveryConsumer } from "./events/discovery-consumer.ts";
import { giftLogConsumer } from "./events/gift-log-consumer.ts";
import { boostJobs, DiscoveryStore } from "./store/discovery-store.ts";
import { giftEntities } from "./store/entities.ts";
import { GiftStore } from "./store/gift-store.ts";
import { giftMigrations } from "./store/migrations.ts";

export const giftSchema = "gift";

export const giftService = defineService({
  name: giftServiceName,
  config: giftConfigSchema,
  database: { schema: giftSchema, entities: giftEntities, migrations: giftMigrations },
  publishes: true,
  build({ config, orm, bus, logger, serviceClient, consumerSettings }) {
    const batch = { batchMax: config.GIFT_BATCH_MAX, queueMax: config.GIFT_QUEUE_MAX };
    const store = new GiftStore(orm, { comboWindowMs: config.GIFT_COMBO_WINDOW_MS, claimBatch: batch });
    const catalog = new CatalogCache(store, logger);
    const rooms = new RoomCache(store, logger);
    const discovery = new DiscoveryStore(orm);
    // The wallet and PK know this caller as "gift" from the key that signed its token.
    const payments = new WalletPayments(serviceClient(WalletService, config.WALLET_URL), batch);
    const boosts: BoostDeps = {
      gifts: store,
      discovery,
      payments,
      pk:
        config.PK_URL === undefined
          ? pkNotConfigured
          : new PkBattlesClient(serviceClient(PkService, config.PK_URL)),
    };
    return {
      rpc: {
        services: [GiftService],
        routes: (router) =>
          router.service(GiftService, giftServiceImpl({ store, catalog, rooms, payments, boosts })),
      },
      components: [
        { name: "catalog cache", start: () => catalog.start(bus), stop: () => catalog.stop() },
        { name: "room cache", start: () => rooms.start(bus), stop: () => rooms.stop() },
      ],
      consumers: [giftLogConsumer(store, consumerSettings), discoveryConsumer(discovery, consumerSettings)],
      jobs: { tasks: { [boostJobs.expire]: () => expireBoosts(discovery).then(() => undefined) } },
      expose: { store, discovery, boosts, sends: { store, catalog, rooms, payments } satisfies SendGiftDeps },
    };
  },
});

export const startGift = (env: Record<string, string | undefined> = process.env) =>
  runService(giftService, env);
export type GiftApp = Awaited<ReturnType<typeof startGift>>;

if (import.meta.main) await serve(giftService);
