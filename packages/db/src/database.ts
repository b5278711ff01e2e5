// One PostgreSQL schema per service, reached through MikroORM 7. Migrations are TypeScript
// classes listed in code (no file discovery) and run at start-up, followed by the schema's SQL
// function files (functions.ts), so a service never serves against an old schema or old
// functions, and tests get a fresh schema by simply starting the service. Both run in one
// transaction, and the whole start-up (schema, migration table, migrations, functions) under an
// advisory lock of the schema: replicas starting together take turns, and the second finds
// nothing left to do.
import type { Constructor, Options } from "@mikro-orm/core";
import { type Migration, Migrator } from "@mikro-orm/migrations";
import { type EntityManager, MikroORM } from "@mikro-orm/postgresql";
import type pg from "pg";
import {
  applyFunctionSources,
  type MigrationList,
  readFunctionFiles,
  type SqlFunctionFile,
} from "./functions.ts";
import { databaseClient, parseDatabaseUrl, pooledClientClassFor, withHost } from "./hosts.ts";
import { markTransactionPooled } from "./pooler.ts";
import { countDatabaseStatements } from "./statements.ts";

/** Transaction and entity lifecycle hooks (the outbox relay wakes on commits through one). */
export type { EventSubscriber } from "@mikro-orm/core";
export type { EntityManager };
export { MikroORM };
export type Database = MikroORM;

export interface DatabaseOptions {
  /** postgres://user@host:port/database */
  url: string;
  /**
   * The same database without a transaction-mode pooler in between, for the start-up's session
   * advisory lock (decision 0043); `url` when absent.
   */
  directUrl?: string;
  /** The service's own schema, for example "wallet". Created when missing. */
  schema: string;
  entities: NonNullable<Options["entities"]>;
  /**
   * Migrations in order; their names must sort in that order too. The list may declare the
   * schema's SQL function files (`withFunctions`).
   */
  migrations: MigrationList<{ name: string; class: Constructor<Migration> }>;
  /**
   * SQL function files applied after the migrations, each when its content changed (in this
   * order); by default those the migration list declares.
   */
  functions?: readonly SqlFunctionFile[];
  /** Pool size; the default suits one replica on a small machine. */
  poolMax?: number;
  debug?: boolean;
  /** Run pending migrations and apply changed function files (default). Read-only tools pass false. */
  migrate?: boolean;
  /** Timeouts of every connection of the pool; see `DatabaseTimeouts`. */
  timeouts?: Partial<DatabaseTimeouts>;
}

/**
 * How long any one thing may take on a connection (milliseconds), so that nothing waits
 * forever: a statement; a wait for a row or advisory lock, which a blocked request or batch
 * answers as `timed_out` (UNAVAILABLE) and so frees its slot; a transaction left idle, which the
 * server ends so its locks go back to the others.
 */
export interface DatabaseTimeouts {
  statementMs: number;
  lockMs: number;
  idleInTransactionMs: number;
}

export const defaultDatabaseTimeouts: DatabaseTimeouts = {
  statementMs: 30_000,
  lockMs: 5_000,
  idleInTransactionMs: 15_000,
};

/** The connection's start-up options: the schema first in the search path, and the timeouts. */
function connectionOptions(schema: string, timeouts: DatabaseTimeouts): string {
  return [
    `-c search_path=${schema}`,
    `-c statement_timeout=${Math.round(timeouts.statementMs)}`,
    `-c lock_timeout=${Math.round(timeouts.lockMs)}`,
    `-c idle_in_transaction_session_timeout=${Math.round(timeouts.idleInTransactionMs)}`,
  ].join(" ");
}

const schemaNamePattern = /^[a-z][a-z0-9_]{0,62}$/;
const defaultPoolMax = 20;
const connectTimeoutMs = 5_000;
const idleTimeoutMs = 30_000;

export async function openDatabase(options: DatabaseOptions): Promise<Database> {
  if (!schemaNamePattern.test(options.schema)) throw new Error(`invalid schema name ${options.schema}`);
  countDatabaseStatements();
  const lock = await lockSchema(options.directUrl ?? options.url, options.schema);
  try {
    if (options.directUrl !== undefined && options.directUrl !== options.url && options.migrate !== false) {
      // Through a pooler the URL's database names a pool, which MikroORM's migrator would look
      // up in pg_database and try to create: the migrations run on the direct URL (0043).
      // Two connections: the migrator looks the database up beside the migrations' transaction.
      const direct = await initOrm({ ...options, url: options.directUrl, poolMax: 2 });
      try {
        await migrateSchema(direct, options.schema, options.functions ?? options.migrations.functions ?? []);
      } finally {
        await direct.close();
      }
      const orm = await initOrm(options);
      markTransactionPooled(await nativePool(orm));
      return orm;
    }
    const orm = await initOrm(options);
    if (options.migrate !== false) {
      await migrateSchema(orm, options.schema, options.functions ?? options.migrations.functions ?? []).catch(
        async (error: unknown) => {
          await orm.close();
          throw error;
        },
      );
    }
    return orm;
  } finally {
    await lock.release();
  }
}

function initOrm(options: DatabaseOptions): Promise<Database> {
  const url = parseDatabaseUrl(options.url);
  const socket = url.params.get("host");
  return MikroORM.init({
    // MikroORM reads one host; the pool's Client class finds the node that accepts writes of a
    // URL with several (hosts.ts).
    clientUrl: withHost(options.url, url.hosts[0] as (typeof url.hosts)[number]),
    schema: options.schema,
    entities: options.entities,
    extensions: [Migrator],
    // Unqualified names in raw SQL and SQL functions resolve in the service's own schema.
    driverOptions: {
      // libpq's `?host=/run/postgresql` (a Unix socket directory), which MikroORM drops when it
      // splits `clientUrl` into its parts.
      ...(socket === null ? {} : { host: socket }),
      Client: pooledClientClassFor(options.url),
      options: connectionOptions(options.schema, { ...defaultDatabaseTimeouts, ...options.timeouts }),
      connectionTimeoutMillis: connectTimeoutMs,
    },
    pool: { min: 0, max: options.poolMax ?? defaultPoolMax, idleTimeoutMillis: idleTimeoutMs },
    migrations: {
      // A plain copy: MikroORM clones its options, and cannot clone the function files' URLs.
      migrationsList: [...options.migrations],
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
}

/**
 * Pending migrations, then the function files that changed (all of them if a migration ran), in
 * one transaction: a replica never sees half an upgrade.
 */
async function migrateSchema(
  orm: Database,
  schema: string,
  files: readonly SqlFunctionFile[],
): Promise<void> {
  const sources = await readFunctionFiles(files);
  const connection = orm.em.getConnection();
  await connection.transactional(async (transaction) => {
    const migrated = await orm.migrator.up({ transaction });
    await applyFunctionSources(orm, transaction, schema, sources, { all: migrated.length > 0 });
  });
}

/** How long a readiness probe waits for the database before calling it unreachable. */
export const readinessProbeTimeoutMs = 500;

/**
 * True when the database answers a trivial query within `timeoutMs`: readiness probes must
 * answer quickly, and a connection attempt to a database that is away can hang for seconds.
 */
async function databaseReachable(orm: Database, timeoutMs = readinessProbeTimeoutMs): Promise<boolean> {
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

/** How long a readiness probe's answer stands before the next probe asks the database again. */
export const readinessProbeMaxAgeMs = 1_000;

/**
 * The database's reachability for readiness probes, answered from memory (decision 0050): a
 * probe that waited for a round trip on every hit would answer late exactly when the process is
 * busiest, and report a busy process as a lost database. An answer older than
 * `readinessProbeMaxAgeMs` is given once more while a fresh probe runs; the first call waits
 * for one. An error on an idle connection of the pool (the database restarted, or the network
 * between cut) forgets the answer at once, so the next call asks the database.
 */
export async function databaseProbe(orm: Database): Promise<() => Promise<boolean>> {
  let last: { reachable: boolean; atMs: number } | undefined;
  let probing: Promise<boolean> | undefined;
  (await nativePool(orm)).on("error", () => {
    last = undefined;
  });
  return () => {
    if (last !== undefined && performance.now() - last.atMs < readinessProbeMaxAgeMs)
      return Promise.resolve(last.reachable);
    probing ??= databaseReachable(orm).then((reachable) => {
      last = { reachable, atMs: performance.now() };
      probing = undefined;
      return reachable;
    });
    return last === undefined ? probing : Promise.resolve(last.reachable);
  };
}

/** The pg pool behind MikroORM, for the few hot paths that are one SQL call. */
export async function nativePool(orm: Database): Promise<pg.Pool> {
  return (await orm.em.getConnection().getNativeClient()) as pg.Pool;
}

/**
 * The schema's start-up lock, held on a connection of its own for the whole start-up: MikroORM
 * creates its migration table outside the migrations' transaction, and concurrent
 * `create … if not exists` statements can fail on each other, so replicas take turns.
 */
async function lockSchema(url: string, schema: string): Promise<{ release(): Promise<void> }> {
  const client = databaseClient(url, { connectionTimeoutMillis: connectTimeoutMs });
  await client.connect();
  try {
    await client.query("select pg_advisory_lock(hashtextextended($1, 0))", [`schema:${schema}`]);
    await client.query(`create schema if not exists "${schema}"`);
  } catch (error) {
    await client.end();
    throw error;
  }
  // Ending the session releases its advisory lock, also when the unlock itself fails.
  return { release: () => client.end() };
}
