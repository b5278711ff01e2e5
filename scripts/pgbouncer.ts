// `./ov up --pgbouncer` (and `--cluster`, the cluster profile): PgBouncer (Debian's package,
// /usr/sbin/pgbouncer 1.18) in transaction mode on 127.0.0.1:6432 in front of the stack's
// Postgres, with one pool per service schema sized by the connection budget and shared by all
// of the service's replicas (decision 0043). Services get DATABASE_URL through it and
// DATABASE_DIRECT_URL to Postgres itself for their one LISTEN connection and the start-up lock.
// This module plans and renders; up.ts starts and stops the process.
import path from "node:path";
import { connectionBudget } from "@ovation/config";
import { type DatabaseTimeouts, defaultDatabaseTimeouts, type PooledDatabase, pooledUrl } from "@ovation/db";
import { type PgBouncerFiles, pgBouncerBinary, writePgBouncerFiles } from "@ovation/db/pgbouncer";

export const pgBouncerDirectory = ".data/pgbouncer";
/** PgBouncer's customary port, beside Postgres's 5432. */
export const pgBouncerEndpoint = { host: "127.0.0.1", port: 6432 } as const;
export { pgBouncerBinary };

/** A pool for a service the budget does not name: the least a service runs with. */
const unbudgetedPoolSize = 2;

/**
 * The session settings every service asks for, from the same variables the services read, so
 * PgBouncer's connect_query sets what their start-up check expects.
 */
export function timeoutsFromEnv(env: NodeJS.ProcessEnv): DatabaseTimeouts {
  const read = (name: string, fallback: number) => {
    const value = env[name];
    return value === undefined || value === "" ? fallback : Number(value);
  };
  return {
    statementMs: read("DATABASE_STATEMENT_TIMEOUT_MS", defaultDatabaseTimeouts.statementMs),
    lockMs: read("DATABASE_LOCK_TIMEOUT_MS", defaultDatabaseTimeouts.lockMs),
    idleInTransactionMs: read(
      "DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_MS",
      defaultDatabaseTimeouts.idleInTransactionMs,
    ),
  };
}

/** Every service's pool: its schema is its name (`checkPooledSession` fails a start where it is not). */
export function pooledDatabases(serviceNames: readonly string[], env: NodeJS.ProcessEnv): PooledDatabase[] {
  const timeouts = timeoutsFromEnv(env);
  const budget: Record<string, number> = connectionBudget;
  return serviceNames.map((schema) => ({ schema, poolSize: budget[schema] ?? unbudgetedPoolSize, timeouts }));
}

/** Writes the configuration under .data/pgbouncer; pgbouncer runs with the returned arguments. */
export function writeUpPgBouncerFiles(
  root: string,
  directUrl: string,
  serviceNames: readonly string[],
  env: NodeJS.ProcessEnv,
): Promise<PgBouncerFiles> {
  return writePgBouncerFiles(path.join(root, pgBouncerDirectory), {
    directUrl,
    host: pgBouncerEndpoint.host,
    port: pgBouncerEndpoint.port,
    databases: pooledDatabases(serviceNames, env),
  });
}

/** A service's database variables: through PgBouncer when it runs, and always the direct URL. */
export function databaseEnv(
  schema: string,
  directUrl: string,
  pgBouncer: { host: string; port: number } | undefined,
): { DATABASE_URL: string; DATABASE_DIRECT_URL?: string } {
  if (pgBouncer === undefined) return { DATABASE_URL: directUrl };
  return { DATABASE_URL: pooledUrl(directUrl, schema, pgBouncer), DATABASE_DIRECT_URL: directUrl };
}
