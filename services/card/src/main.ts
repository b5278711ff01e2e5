// Card processor simulator wiring: config, its signing key, database, RPC server. No event bus:
// it answers merchants and signs what it answers. `startCard` is what tests start in-process.
import {
  createStatementSigner,
  createTokenVerifier,
  importSigningKey,
  statementPurposes,
} from "@ovation/auth";
import { loadConfig, tokenVerifierSettings } from "@ovation/config";
import { type Database, openDatabase } from "@ovation/db";
import { CardService } from "@ovation/proto/gen/ovation/card/v1/card_pb.ts";
import { closeOnSignals, createLogger, type Logger, type RunningServer, startServer } from "@ovation/server";
import { cardServiceImpl } from "./api/card-service.ts";
import { type CardConfig, cardConfigSchema, cardServiceName } from "./config.ts";
import { ChargeStore } from "./store/charge-store.ts";
import { cardMigrations } from "./store/migrations.ts";

export const cardSchema = "card";

export interface CardApp {
  config: CardConfig;
  server: RunningServer;
  orm: Database;
  logger: Logger;
  close(): Promise<void>;
}

export async function startCard(env: Record<string, string | undefined> = process.env): Promise<CardApp> {
  const config = loadConfig(cardConfigSchema, env);
  const logger = createLogger(cardServiceName, config.LOG_LEVEL);
  const sign = createStatementSigner(
    await importSigningKey(config.SERVICE_KEY_FILE.jwk),
    statementPurposes.paymentResult,
  );
  const orm = await openDatabase({
    url: config.DATABASE_URL,
    schema: cardSchema,
    entities: [],
    migrations: cardMigrations,
    poolMax: config.DATABASE_POOL_MAX,
  });
  const deps = {
    store: new ChargeStore(orm),
    sign,
    settings: {
      failureRate: config.CARD_FAILURE_RATE,
      latencyMs: config.CARD_LATENCY_MS,
      seed: config.CARD_SEED,
      declineCustomers: config.CARD_DECLINE_CUSTOMERS,
    },
  };
  const server = await startServer({
    name: cardServiceName,
    host: config.HOST,
    port: config.PORT,
    logger,
    verifyToken: createTokenVerifier(tokenVerifierSettings(config)),
    services: [CardService],
    routes: (router) => router.service(CardService, cardServiceImpl(deps, config.CARD_MERCHANTS)),
    ready: () => orm.isConnected(),
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

if (import.meta.main) closeOnSignals(await startCard());
