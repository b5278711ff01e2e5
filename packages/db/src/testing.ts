// For tests that call a service's SQL directly: its schema migrated (functions applied) on a
// test database, and a plain pg pool whose search path is that schema, without the service.
import type pg from "pg";
import { type Database, type DatabaseOptions, openDatabase } from "./database.ts";
import { databasePool } from "./hosts.ts";

export interface MigratedSchema {
  orm: Database;
  /** Unqualified names resolve in the schema. */
  pool: pg.Pool;
  close(): Promise<void>;
}

export async function migratedSchema(
  url: string,
  schema: string,
  migrations: DatabaseOptions["migrations"],
  poolMax = 8,
): Promise<MigratedSchema> {
  const orm = await openDatabase({ url, schema, entities: [], migrations });
  const pool = databasePool(url, { options: `-c search_path=${schema}`, max: poolMax });
  // pool.end() resolves before its connections have closed; one the test database's drop
  // terminates meanwhile reports an error on the pool, which is expected then.
  pool.on("error", () => {});
  return {
    orm,
    pool,
    async close() {
      await pool.end();
      await orm.close();
    },
  };
}
