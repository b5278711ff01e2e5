// The order service: the shop over RPC, the inventory module and the saga's orchestrator and
// payment module as durable consumers of the ORDER stream (paying through the wallet and the
// card processor), and each step's deadline on the durable timers. Start, stop and draining
// are packages/service's.
import { createStatementVerifier, statementPurposes } from "@ovation/auth";
import { CardService } from "@ovation/proto/gen/ovation/card/v1/card_pb.ts";
import { OrderService } from "@ovation/proto/gen/ovation/order/v1/order_pb.ts";
import { WalletService } from "@ovation/proto/gen/ovation/wallet/v1/wallet_pb.ts";
import { defineService, runService, serve } from "@ovation/service";
import { orderServiceImpl } from "./api/order-service.ts";
import { Inventory } from "./app/inventory.ts";
import { type OrderDeps, sagaTimers } from "./app/orders.ts";
import { Payments } from "./app/payments.ts";
import { CardProcessorClient } from "./clients/card.ts";
import { WalletHolds } from "./clients/wallet.ts";
import { orderConfigSchema, orderServiceName, stepTimeoutOf } from "./config.ts";
import { orderConsumers } from "./events/consumers.ts";
import { InventoryStore, ReservationStore } from "./store/inventory-store.ts";
import { orderMigrations } from "./store/migrations.ts";
import { OrderStore } from "./store/order-store.ts";
import { ShopStore } from "./store/shop-store.ts";

export const orderSchema = "order";

export const orderService = defineService({
  name: orderServiceName,
  config: orderConfigSchema,
  database: { schema: orderSchema, migrations: orderMigrations },
  publishes: true,
  build({ config, orm, serviceClient, consumerSettings }) {
    const shop = new ShopStore(orm);
    const fork = () => orm.em.fork();
    const inventory = new Inventory(fork, new InventoryStore(), new ReservationStore());
    // The wallet and the card processor know this caller as "order" from the key that signed its token.
    const payments = new Payments(
      new WalletHolds(serviceClient(WalletService, config.WALLET_URL)),
      new CardProcessorClient(serviceClient(CardService, config.CARD_URL)),
      createStatementVerifier(config.JWKS_FILE.jwks, "card", statementPurposes.paymentResult),
    );
    const deps: OrderDeps = {
      orders: new OrderStore(),
      shop,
      payments,
      fork,
      stepTimeoutMs: stepTimeoutOf(config),
    };
    return {
      rpc: {
        services: [OrderService],
        routes: (router) => router.service(OrderService, orderServiceImpl({ store: shop, inventory }, deps)),
      },
      consumers: orderConsumers(inventory, deps, consumerSettings),
      jobs: { tasks: sagaTimers(deps) },
      expose: { payments },
    };
  },
});

export const startOrder = (env: Record<string, string | undefined> = process.env) =>
  runService(orderService, env);
export type OrderApp = Awaited<ReturnType<typeof startOrder>>;

if (import.meta.main) await serve(orderService);
