// Operator commands on the configured database and NATS (DATABASE_URL, NATS_URL,
// OVATION_PREFIX), run through the wrapper:
//   ./ov replay pk-side-boosts [--from SEQUENCE|ISO_TIME]   rebuilds the side boosts shown on
//        battles from the WALLET stream into fresh tables and swaps them in while the PK
//        service keeps running (packages/events/src/replay.ts)
import { infrastructureConfigSchema, loadConfig, operatorSchema } from "@ovation/config";
import { replayCli } from "@ovation/events";
import { missingTable } from "@ovation/operator";
import { createLogger } from "@ovation/server";
import { sideBoostConsumer } from "./events/side-boost-consumer.ts";
import { pkSchema } from "./main.ts";
import { PkStore } from "./store/pk-store.ts";

// `./ov replay` finds this file by this line: keep the consumer's name right after "replay".
const usage = "usage: replay pk-side-boosts [--from SEQUENCE|ISO_TIME]";

async function main([command, ...args]: string[]): Promise<number> {
  // An operator command: it connects to NATS as `ops` (NATS_NKEY_FILE or OVATION_KEY_DIR).
  const config = loadConfig(operatorSchema(infrastructureConfigSchema), process.env);
  if (command !== "replay") {
    console.error(usage);
    return 2;
  }
  // A replay copies the projection's tables and the inbox: without them, one clear line.
  const problem = await missingTable(config.DATABASE_URL, pkSchema, "inbox");
  if (problem !== undefined) {
    console.error(problem);
    return 1;
  }
  return replayCli(args, {
    schema: pkSchema,
    databaseUrl: config.DATABASE_URL,
    natsUrl: config.NATS_URL,
    prefix: config.OVATION_PREFIX,
    nkeySeed: config.NATS_NKEY_FILE?.seed,
    // Quiet unless asked: the command prints its own result.
    logger: createLogger("pk-cli", process.env.LOG_LEVEL ?? "warn"),
    projections: (orm) => [sideBoostConsumer(new PkStore(orm))],
  });
}

if (import.meta.main) process.exitCode = await main(process.argv.slice(2));
