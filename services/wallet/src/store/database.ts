// The wallet's schema, for the service (packages/service) and the operator commands (cli.ts).
import { type Database, openDatabase } from "@ovation/db";
import type { WalletCliConfig } from "../config.ts";
import { walletEntities } from "./entities.ts";
import { walletMigrations } from "./migrations.ts";

export const walletDatabase = { schema: "wallet", entities: walletEntities, migrations: walletMigrations };

/** The wallet's schema for a command that reads it (`migrate` false: never changes it). */
export function openWalletDatabase(config: WalletCliConfig, migrate = true): Promise<Database> {
  return openDatabase({
    url: config.DATABASE_URL,
    ...walletDatabase,
    poolMax: config.DATABASE_POOL_MAX,
    migrate,
  });
}
