// One PostgreSQL schema per service, reached through MikroORM 7. Migrations are TypeScript
// classes listed in code (no file discovery) and run at start-up, so a service never serves
// against an old schema, and tests get a fresh schema by simply starting the service.
import type { Constructor, Options } from "@mikro-orm/core";
import { type Migration, Migrator } from "@mikro-orm/migrations";
import { type EntityManager, MikroORM } from "@mikro-orm/postgresql";
import pg from "pg";

export type { EntityManager };
export { MikroORM };
export type Database = MikroORM;

export interface DatabaseOptions {
  /** postgres://user@host:port/database */
  url: string;
  /** The service's own schema, for example "wallet". Created when missing. */
  schema: string;
  entities: NonNullable<Options["entities"]>;
  /** Migrations in order; their names must sort in that order too. */
  migrations: { name: string; class: Constructor<Migration> }[];
  /** Pool size; the default suits one replica on a small machine. */
  poolMax?: number;
  debug?: boolean;
  /** Run pending migrations (default). Read-only tools pass false. */
  migrate?: boolean;
}

const schemaNamePattern = /^[a-z][a-z0-9_]{0,62}$/;
const defaultPoolMax = 20;
const connectTimeoutMs = 5_000;
const idleTimeoutMs = 30_000;

export async function openDatabase(options: DatabaseOptions): Promise<Database> {
  if (!schemaNamePattern.test(options.schema)) throw new Error(`invalid schema name ${options.schema}`);
  await createSchema(options.url, options.schema);
  const orm = await MikroORM.init({
    clientUrl: options.url,
    schema: options.schema,
    entities: options.entities,
    extensions: [Migrator],
    // Unqualified names in raw SQL and SQL functions resolve in the service's own schema.
    driverOptions: { options: `-c search_path=${options.schema}`, connectionTimeoutMillis: connectTimeoutMs },
    pool: { min: 0, max: options.poolMax ?? defaultPoolMax, idleTimeoutMillis: idleTimeoutMs },
    migrations: {
      migrationsList: options.migrations,
      tableName: "schema_migrations",
      schema: options.schema,
      transactional: true,
      allOrNothing: true,
      snapshot: false,
      silent: true,
    },
    allowGlobalContext: false,
    debug: options.debug ?? false,
    ensureDatabase: false,
    discovery: { warnWhenNoEntities: false },
  });
  if (options.migrate !== false) await orm.migrator.up();
  return orm;
}

/** The pg pool behind MikroORM, for the few hot paths that are one SQL call. */
/** How long a readiness probe waits for the database before calling it unreachable. */
export const readinessProbeTimeoutMs = 500;

/**
 * True when the database answers a trivial query within `timeoutMs`: readiness probes must
 * answer quickly, and a connection attempt to a database that is away can hang for seconds.
 */
export async function databaseReachable(
  orm: Database,
  timeoutMs = readinessProbeTimeoutMs,
): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<false>((resolve) => {
    timer = setTimeout(resolve, timeoutMs, false);
  });
  try {
    return await Promise.race([orm.isConnected().catch(() => false), late]);
  } finally {
    clearTimeout(timer);
  }
}

export async function nativePool(orm: Database): Promise<pg.Pool> {
  return (await orm.em.getConnection().getNativeClient()) as pg.Pool;
}

async function createSchema(url: string, schema: string): Promise<void> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: connectTimeoutMs });
  await client.connect();
  try {
    await client.query(`create schema if not exists "${schema}"`);
  } finally {
    await client.end();
  }
}
