// Order service wiring, top to bottom: config, database, inventory module, RPC server.
// `startOrder` is what tests start in-process. The order saga (events, timers, payment) builds
// on this.
import { createTokenVerifier } from "@ovation/auth";
import { loadConfig, tokenVerifierSettings } from "@ovation/config";
import { type Database, openDatabase } from "@ovation/db";
import { OrderService } from "@ovation/proto/gen/ovation/order/v1/order_pb.ts";
import { closeOnSignals, createLogger, type Logger, type RunningServer, startServer } from "@ovation/server";
import { orderErrorInterceptor, orderServiceImpl } from "./api/order-service.ts";
import { Inventory } from "./app/inventory.ts";
import { type OrderConfig, orderConfigSchema, orderServiceName } from "./config.ts";
import { orderMigrations } from "./store/migrations.ts";
import { ShopStore } from "./store/shop-store.ts";

export const orderSchema = "order";

export interface OrderApp {
  config: OrderConfig;
  server: RunningServer;
  orm: Database;
  logger: Logger;
  close(): Promise<void>;
}

export async function startOrder(env: Record<string, string | undefined> = process.env): Promise<OrderApp> {
  const config = loadConfig(orderConfigSchema, env);
  const logger = createLogger(orderServiceName, config.LOG_LEVEL);
  const orm = await openDatabase({
    url: config.DATABASE_URL,
    schema: orderSchema,
    entities: [],
    migrations: orderMigrations,
    poolMax: config.DATABASE_POOL_MAX,
  });
  const deps = { store: new ShopStore(orm), inventory: new Inventory(orm) };
  const server = await startServer({
    name: orderServiceName,
    host: config.HOST,
    port: config.PORT,
    logger,
    verifyToken: createTokenVerifier(tokenVerifierSettings(config)),
    services: [OrderService],
    routes: (router) => router.service(OrderService, orderServiceImpl(deps)),
    interceptors: [orderErrorInterceptor],
    ready: async () => orm.isConnected(),
  });
  return {
    config,
    server,
    orm,
    logger,
    async close() {
      await server.close();
      await orm.close();
    },
  };
}

if (import.meta.main) closeOnSignals(await startOrder());
