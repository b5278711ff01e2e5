// Operator commands on the configured database and NATS (DATABASE_URL, NATS_URL,
// OVATION_PREFIX), run through the wrapper:
//   ./ov replay gift-discovery [--from SEQUENCE|ISO_TIME]   rebuilds the discovery ranking's
//        boosts from the WALLET stream into fresh tables and swaps them in while the gift
//        service keeps running (packages/events/src/replay.ts)
import { infrastructureConfigSchema, loadConfig, operatorSchema } from "@ovation/config";
import { replayCli } from "@ovation/events";
import { createLogger } from "@ovation/server";
import { discoveryConsumer } from "./events/discovery-consumer.ts";
import { giftSchema } from "./main.ts";
import { DiscoveryStore } from "./store/discovery-store.ts";

if (import.meta.main) {
  const [command, ...args] = process.argv.slice(2);
  // An operator command: it connects to NATS as `ops` (NATS_NKEY_FILE or OVATION_KEY_DIR).
  const config = loadConfig(operatorSchema(infrastructureConfigSchema), process.env);
  if (command !== "replay") {
    console.error("usage: replay gift-discovery [--from SEQUENCE|ISO_TIME]");
    process.exitCode = 2;
  } else {
    process.exitCode = await replayCli(args, {
      schema: giftSchema,
      databaseUrl: config.DATABASE_URL,
      natsUrl: config.NATS_URL,
      prefix: config.OVATION_PREFIX,
      nkeySeed: config.NATS_NKEY_FILE?.seed,
      // Quiet unless asked: the command prints its own result.
      logger: createLogger("gift-cli", process.env.LOG_LEVEL ?? "warn"),
      projections: (orm) => [discoveryConsumer(new DiscoveryStore(orm))],
    });
  }
}
