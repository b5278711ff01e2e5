// Order service wiring, top to bottom: config, database, event bus, outbox relay, the shop, the
// inventory module, the payment module (wallet client, card simulator), the saga's consumers
// and deadlines, RPC server. `startOrder` is what tests start in-process.
import type { DescMessage } from "@bufbuild/protobuf";
import {
  bearerInterceptor,
  createStatementVerifier,
  createTokenVerifier,
  importSigningKey,
  serviceTokenSource,
  statementPurposes,
} from "@ovation/auth";
import { loadConfig, tokenVerifierSettings } from "@ovation/config";
import { type Database, nativePool, openDatabase } from "@ovation/db";
import {
  ConsumerRunner,
  type ConsumerSpec,
  connectServiceBus,
  type EventBus,
  type OutboxRelay,
  startDlqMover,
  startOutboxRelay,
} from "@ovation/events";
import { type Jobs, prepareJobs, startJobs } from "@ovation/jobs";
import { CardService } from "@ovation/proto/gen/ovation/card/v1/card_pb.ts";
import { OrderService } from "@ovation/proto/gen/ovation/order/v1/order_pb.ts";
import { WalletService } from "@ovation/proto/gen/ovation/wallet/v1/wallet_pb.ts";
import {
  closeOnSignals,
  createLogger,
  createServiceClient,
  type Logger,
  type RunningServer,
  startServer,
} from "@ovation/server";
import { orderServiceImpl } from "./api/order-service.ts";
import { Inventory } from "./app/inventory.ts";
import { type OrderDeps, orderJobs, stepDeadline } from "./app/orders.ts";
import { Payments } from "./app/payments.ts";
import { type OrderConfig, orderConfigSchema, orderServiceName } from "./config.ts";
import { inventoryConsumers, paymentConsumers, sagaConsumers } from "./events/consumers.ts";
import { orderMigrations } from "./store/migrations.ts";
import { OrderStore } from "./store/order-store.ts";
import { ShopStore } from "./store/shop-store.ts";

export const orderSchema = "order";

export interface OrderApp {
  config: OrderConfig;
  server: RunningServer;
  orm: Database;
  bus: EventBus;
  relay: OutboxRelay;
  payments: Payments;
  /** Every durable consumer by name (tests stop and start them). */
  consumers: Map<string, ConsumerRunner<DescMessage>>;
  logger: Logger;
  close(): Promise<void>;
}

export async function startOrder(env: Record<string, string | undefined> = process.env): Promise<OrderApp> {
  const config = loadConfig(orderConfigSchema, env);
  const logger = createLogger(orderServiceName, config.LOG_LEVEL);
  const serviceKey = await importSigningKey(config.SERVICE_KEY_FILE.jwk);
  const orm = await openDatabase({
    url: config.DATABASE_URL,
    schema: orderSchema,
    entities: [],
    migrations: orderMigrations,
    poolMax: config.DATABASE_POOL_MAX,
  });
  const bus = await connectServiceBus(orderServiceName, config);
  const relay = await startOutboxRelay({
    orm,
    databaseUrl: config.DATABASE_URL,
    schema: orderSchema,
    bus,
    logger,
  });
  const shop = new ShopStore(orm);
  const inventory = new Inventory(orm);
  // The wallet and the card processor know this caller as "order" from the key that signed its token.
  const asOrder = bearerInterceptor(serviceTokenSource(orderServiceName, serviceKey, config.JWT_AUDIENCE));
  const payments = new Payments(
    createServiceClient(WalletService, { baseUrl: config.WALLET_URL, interceptors: [asOrder] }),
    createServiceClient(CardService, { baseUrl: config.CARD_URL, interceptors: [asOrder] }),
    createStatementVerifier(config.JWKS_FILE.jwks, "card", statementPurposes.paymentResult),
  );
  const deps: OrderDeps = {
    orders: new OrderStore(),
    shop,
    payments,
    fork: () => orm.em.fork(),
    stepTimeoutMs: config.ORDER_STEP_TIMEOUT_MS,
  };
  const settings = { retryBackoffMs: config.EVENTS_RETRY_BACKOFF_MS, ackWaitMs: config.EVENTS_ACK_WAIT_MS };
  const specs: ConsumerSpec<DescMessage>[] = [
    ...inventoryConsumers(inventory, settings),
    ...sagaConsumers(deps, settings),
    ...paymentConsumers(payments, deps, settings),
  ] as unknown as ConsumerSpec<DescMessage>[];
  const consumers = new Map(specs.map((spec) => [spec.name, new ConsumerRunner(spec, { bus, orm, logger })]));
  const pool = await nativePool(orm);
  let jobs: Jobs | undefined;
  if (config.ORDER_RUN_CONSUMERS) {
    for (const runner of consumers.values()) await runner.start();
    jobs = await startJobs({
      pool,
      logger,
      tasks: {
        [orderJobs.deadline]: async (payload) => {
          const { orderId, stage } = payload as { orderId: string; stage: string };
          await stepDeadline(deps, orderId, stage);
        },
      },
    });
  } else {
    await prepareJobs({ pool, logger });
  }
  const mover = await startDlqMover(bus, logger);
  const server = await startServer({
    name: orderServiceName,
    host: config.HOST,
    port: config.PORT,
    logger,
    verifyToken: createTokenVerifier(tokenVerifierSettings(config)),
    services: [OrderService],
    routes: (router) => router.service(OrderService, orderServiceImpl({ store: shop, inventory }, deps)),
    ready: async () => (await orm.isConnected()) && !bus.connection.isClosed(),
  });
  return {
    config,
    server,
    orm,
    bus,
    relay,
    payments,
    consumers,
    logger,
    async close() {
      await server.close();
      await jobs?.stop();
      for (const runner of consumers.values()) await runner.stop();
      await mover.stop();
      await relay.stop();
      await bus.close();
      await orm.close();
    },
  };
}

if (import.meta.main) closeOnSignals(await startOrder());
