// PgBouncer in transaction mode in front of Postgres (decision 0043). A server connection serves
// one client transaction and then the next client's, so nothing may live in a session: a LISTEN,
// a session advisory lock, a named prepared statement, a SET outside a transaction. Those go to
// DATABASE_DIRECT_URL (the shared LISTEN connection, the start-up lock, a replay's lock) or are
// not used (graphile-worker runs without prepared statements).
//
// The session settings a service asks for with the `options` start-up parameter (its schema first
// in search_path, its timeouts) are what PgBouncer 1.18 cannot pass on: it refuses the parameter,
// or ignores it when told to. So each service gets a PgBouncer database of its own, named
// `<database>__<schema>`, whose `connect_query` sets them when PgBouncer opens a server
// connection; its pool is shared by every replica of the service, and its `pool_size` is the
// service's share of the connection budget. A service checks at start-up that the connections it
// gets have the settings it needs (`checkPooledSession`), so a pooler configured otherwise fails
// the start instead of running with another schema's search path or no timeouts.
import type pg from "pg";
import type { DatabaseTimeouts } from "./database.ts";
import { type DatabaseUrl, parseDatabaseUrl } from "./hosts.ts";

/**
 * `url` as PgBouncer's one server. PgBouncer 1.18 reaches one host, so it cannot follow a
 * primary that fails over (a URL with several hosts, decision 0046): refused.
 */
function singleServer(url: string): DatabaseUrl & { host: string; port: number } {
  const parsed = parseDatabaseUrl(url);
  if (parsed.hosts.length !== 1 || parsed.readWrite)
    throw new Error(
      "PgBouncer 1.18 reaches one host: it cannot front a database URL with several (a Postgres that fails over)",
    );
  const only = parsed.hosts[0]!;
  return { ...parsed, host: parsed.params.get("host") ?? only.host, port: only.port };
}

/** Pools whose connections go through a transaction-mode pooler (openDatabase with a directUrl). */
const pooledPools = new WeakSet<pg.Pool>();

/** Marks `pool` as reaching Postgres through a transaction-mode pooler. */
export function markTransactionPooled(pool: pg.Pool): void {
  pooledPools.add(pool);
}

/**
 * The name to prepare a hot statement under on `pool`, or undefined behind a transaction-mode
 * pooler: PgBouncer 1.18 hands each transaction any server connection, where a statement prepared
 * in an earlier one does not exist ("prepared statement … does not exist"). Unnamed there, it is
 * parsed and planned on every call, as any other statement.
 */
export function preparedStatementName(pool: pg.Pool, name: string): string | undefined {
  return pooledPools.has(pool) ? undefined : name;
}

/** PgBouncer's name of `schema`'s pool on `database`. */
export function pooledDatabaseName(database: string, schema: string): string {
  return `${database}__${schema}`;
}

/**
 * `directUrl` (a Postgres URL) turned into the URL of `schema`'s PgBouncer database on
 * `host:port`: user and password kept, the database renamed, a Unix socket parameter dropped.
 */
export function pooledUrl(
  directUrl: string,
  schema: string,
  endpoint: { host: string; port: number },
): string {
  const server = singleServer(directUrl);
  const url = new URL("postgres://placeholder/");
  url.username = encodeURIComponent(server.user);
  url.password = encodeURIComponent(server.password);
  url.hostname = endpoint.host;
  url.port = String(endpoint.port);
  url.pathname = `/${pooledDatabaseName(server.database, schema)}`;
  for (const [key, value] of server.params) if (key !== "host") url.searchParams.set(key, value);
  return url.toString();
}

export interface PooledDatabase {
  schema: string;
  /** Server connections of the pool, shared by every replica of the service. */
  poolSize: number;
  timeouts: DatabaseTimeouts;
}

export interface PgBouncerConfigOptions {
  /** The Postgres behind it. */
  directUrl: string;
  listenHost: string;
  listenPort: number;
  databases: readonly PooledDatabase[];
  /** The user list PgBouncer reads (`renderPgBouncerUsers`). */
  authFile: string;
  /**
   * How clients prove who they are: trust on a loopback address of this machine (as its
   * Postgres does); a password (the auth file's, also used towards Postgres) anywhere else.
   */
  authType?: "trust" | "scram-sha-256";
}

export const pgBouncerLimits = {
  /** Client connections PgBouncer accepts in all (services' pools, tools). */
  maxClientConnections: 2_000,
  /**
   * How long a client's transaction may wait for a server connection before PgBouncer fails it
   * (seconds): within the statement timeout, so a request never waits for ever.
   */
  queryWaitTimeoutSeconds: 20,
  /** A server connection idle this long is closed (seconds): an idle stack gives connections back. */
  serverIdleTimeoutSeconds: 60,
  connectTimeoutSeconds: 5,
} as const;

/** The session settings of a service's connections, as one `connect_query`. */
export function sessionSettingsQuery(schema: string, timeouts: DatabaseTimeouts): string {
  return [
    `set search_path = "${schema}"`,
    `set statement_timeout = ${Math.round(timeouts.statementMs)}`,
    `set lock_timeout = ${Math.round(timeouts.lockMs)}`,
    `set idle_in_transaction_session_timeout = ${Math.round(timeouts.idleInTransactionMs)}`,
  ].join("; ");
}

/** PgBouncer's configuration: one transaction-mode pool per service schema. */
export function renderPgBouncerConfig(options: PgBouncerConfigOptions): string {
  const direct = singleServer(options.directUrl);
  const database = direct.database;
  const user = direct.user || "postgres";
  const server = [
    `host=${direct.host}`,
    `port=${direct.port}`,
    `dbname=${database}`,
    `user=${user}`,
    ...(direct.password === "" ? [] : [`password=${direct.password}`]),
  ].join(" ");
  const lines = ["[databases]"];
  for (const pooled of options.databases) {
    const settings = sessionSettingsQuery(pooled.schema, pooled.timeouts);
    lines.push(
      `${pooledDatabaseName(database, pooled.schema)} = ${server} pool_size=${pooled.poolSize} connect_query='${settings}'`,
    );
  }
  lines.push(
    "",
    "[pgbouncer]",
    `listen_addr = ${options.listenHost}`,
    `listen_port = ${options.listenPort}`,
    // No Unix socket: a second PgBouncer (a test's) would fight over /tmp/.s.PGSQL.<port>.
    "unix_socket_dir =",
    "pool_mode = transaction",
    // node-postgres sends the services' session settings as `options`, which PgBouncer 1.18
    // refuses; connect_query sets them instead, and checkPooledSession proves it did.
    "ignore_startup_parameters = options,extra_float_digits",
    `auth_type = ${options.authType ?? "trust"}`,
    `auth_file = ${options.authFile}`,
    // SHOW POOLS / SHOW SERVERS on the `pgbouncer` console, for the budget's measurements.
    `admin_users = ${user}`,
    `max_client_conn = ${pgBouncerLimits.maxClientConnections}`,
    "default_pool_size = 2",
    "reserve_pool_size = 0",
    `query_wait_timeout = ${pgBouncerLimits.queryWaitTimeoutSeconds}`,
    `server_idle_timeout = ${pgBouncerLimits.serverIdleTimeoutSeconds}`,
    `server_connect_timeout = ${pgBouncerLimits.connectTimeoutSeconds}`,
    "log_connections = 0",
    "log_disconnections = 0",
    "log_stats = 0",
    "",
  );
  return lines.join("\n");
}

/** PgBouncer's user list: the server's user, its password if the URL has one. */
export function renderPgBouncerUsers(directUrl: string): string {
  const server = singleServer(directUrl);
  const quote = (text: string) => `"${text.replaceAll('"', '""')}"`;
  return `${quote(server.user || "postgres")} ${quote(server.password)}\n`;
}

/**
 * Fails when connections of `pool` (through a pooler) lack the session settings the service asks
 * for: another schema first in the search path would read and write another service's tables.
 */
export async function checkPooledSession(
  pool: pg.Pool,
  schema: string,
  timeouts: Partial<DatabaseTimeouts>,
): Promise<void> {
  const { rows } = await pool.query<{ search_path: string; statement: number; lock: number; idle: number }>(
    `select current_setting('search_path') as search_path,
       (extract(epoch from current_setting('statement_timeout')::interval) * 1000)::int as statement,
       (extract(epoch from current_setting('lock_timeout')::interval) * 1000)::int as lock,
       (extract(epoch from current_setting('idle_in_transaction_session_timeout')::interval) * 1000)::int as idle`,
  );
  const row = rows[0]!;
  const wrong: string[] = [];
  const first = row.search_path.split(",")[0]!.trim().replaceAll('"', "");
  if (first !== schema) wrong.push(`search_path is ${row.search_path}, not ${schema} first`);
  const expect = (name: string, actual: number, wanted: number | undefined) => {
    if (wanted !== undefined && Number(actual) !== Math.round(wanted))
      wrong.push(`${name} is ${actual} ms, not ${wanted}`);
  };
  expect("statement_timeout", row.statement, timeouts.statementMs);
  expect("lock_timeout", row.lock, timeouts.lockMs);
  expect("idle_in_transaction_session_timeout", row.idle, timeouts.idleInTransactionMs);
  if (wrong.length > 0)
    throw new Error(
      `connections through DATABASE_URL (a pooler: DATABASE_DIRECT_URL differs) lack this service's session settings: ${wrong.join("; ")}. ` +
        `Its pooler database must set them with connect_query (sessionSettingsQuery, scripts/pgbouncer.ts).`,
    );
}
