// The card processor simulator: a database of charges and an RPC server that answers merchants
// and signs what it answers. No event bus. `startCard` is what tests start in-process.
import { createStatementSigner, importSigningKey, statementPurposes } from "@ovation/auth";
import { CardService } from "@ovation/proto/gen/ovation/card/v1/card_pb.ts";
import { defineService, runService, serve } from "@ovation/service";
import { cardServiceImpl } from "./api/card-service.ts";
import { cardConfigSchema, cardServiceName } from "./config.ts";
import { ChargeStore } from "./store/charge-store.ts";
import { cardMigrations } from "./store/migrations.ts";

export const cardService = defineService({
  name: cardServiceName,
  config: cardConfigSchema,
  database: { schema: "card", migrations: cardMigrations },
  bus: false,
  async build({ config, orm }) {
    const sign = createStatementSigner(
      await importSigningKey(config.SERVICE_KEY_FILE.jwk),
      statementPurposes.paymentResult,
    );
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
    return {
      rpc: {
        services: [CardService],
        routes: (router) => router.service(CardService, cardServiceImpl(deps, config.CARD_MERCHANTS)),
      },
    };
  },
});

export const startCard = (env: Record<string, string | undefined> = process.env) =>
  runService(cardService, env);
export type CardApp = Awaited<ReturnType<typeof startCard>>;

if (import.meta.main) await serve(cardService);
