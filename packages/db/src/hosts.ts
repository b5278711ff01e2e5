// Database URLs with several hosts, as libpq reads them, for a Postgres that fails over
// (decision 0046): `postgres://user@h1:5441,h2:5442/ovation?target_session_attrs=read-write`
// names the nodes of a pg_auto_failover formation (what `pg_autoctl show uri` prints), and a
// connection goes to the one that accepts writes. node-postgres reads one host only, so every
// client and pool of the project is made here:
// - the read-write node is found by asking each node whether it accepts writes (one probe shared by
//   every connection that needs it) and remembered for the process;
// - each new connection of a pool goes to the remembered node and checks it still accepts
//   writes; a refused connection or a node that became a standby forgets it, so the next
//   connection probes again. The failed connection is an infrastructure error (SQLSTATE class
//   08): requests answer 503 and are retried with their idempotency keys.
// A URL with one host and no target_session_attrs gives plain node-postgres clients.
import pg from "pg";

export interface DatabaseHost {
  host: string;
  port: number;
}

export interface DatabaseUrl {
  hosts: readonly DatabaseHost[];
  user: string;
  password: string;
  database: string;
  /** The query string without target_session_attrs (libpq's host=, sslmode…). */
  params: URLSearchParams;
  /** libpq's target_session_attrs: "read-write" connects only to a node that accepts writes. */
  readWrite: boolean;
}

const defaultPort = 5432;
const hostListPattern = /^(postgres(?:ql)?:\/\/)(?:([^@/]*)@)?([^/?#]*)(.*)$/;

/** The parts of a postgres:// URL with one or more comma-separated hosts. */
export function parseDatabaseUrl(url: string): DatabaseUrl {
  const match = hostListPattern.exec(url);
  if (match === null) throw new TypeError("not a postgres:// URL");
  const [, scheme, credentials, hostList = "", rest = ""] = match;
  // One placeholder host lets the URL parser read the rest (credentials, path, query).
  const parsed = new URL(`${scheme}${credentials === undefined ? "" : `${credentials}@`}placeholder${rest}`);
  const hosts = hostList.split(",").map((entry) => parseHost(entry));
  const targetSessionAttrs = parsed.searchParams.get("target_session_attrs") ?? "any";
  if (targetSessionAttrs !== "any" && targetSessionAttrs !== "read-write")
    throw new TypeError(`target_session_attrs=${targetSessionAttrs} is not supported (any, read-write)`);
  parsed.searchParams.delete("target_session_attrs");
  return {
    hosts,
    user: decodeURIComponent(parsed.username),
    password: decodeURIComponent(parsed.password),
    database: decodeURIComponent(parsed.pathname.replace(/^\//, "")),
    params: parsed.searchParams,
    readWrite: targetSessionAttrs === "read-write",
  };
}

function parseHost(entry: string): DatabaseHost {
  const match = /^(\[[^\]]+\]|[^:]*)(?::(\d+))?$/.exec(entry);
  const host = match?.[1]?.replace(/^\[(.*)\]$/, "$1") ?? "";
  if (match === null || host === "") throw new TypeError(`invalid host "${entry}"`);
  const port = match[2] === undefined ? defaultPort : Number(match[2]);
  if (port < 1 || port > 65_535) throw new TypeError(`invalid port in "${entry}"`);
  return { host, port };
}

/** True for a URL naming one host without a session target: nothing here is needed for it. */
export function isPlainDatabaseUrl(url: string): boolean {
  const parsed = parseDatabaseUrl(url);
  return parsed.hosts.length === 1 && !parsed.readWrite;
}

/** `url` naming only `host` (for a tool that needs one node, or MikroORM's parser). */
export function withHost(url: string, host: DatabaseHost): string {
  const parsed = parseDatabaseUrl(url);
  const address = host.host.includes(":") ? `[${host.host}]` : host.host;
  const credentials =
    parsed.user === ""
      ? ""
      : `${encodeURIComponent(parsed.user)}${parsed.password === "" ? "" : `:${encodeURIComponent(parsed.password)}`}@`;
  const query = parsed.params.toString();
  return `postgres://${credentials}${address}:${host.port}/${encodeURIComponent(parsed.database)}${query === "" ? "" : `?${query}`}`;
}

/**
 * libpq's read-write test and more: a standby is in recovery, and a standby being promoted by
 * pg_auto_failover already left recovery but stays read-only until the monitor confirms it.
 */
const writableQuery =
  "select not pg_is_in_recovery() and current_setting('transaction_read_only') = 'off' as writable";

/** How long one node may take to answer the read-write probe. */
const probeTimeoutMs = 2_000;

/** A connection that found no node accepting writes: an outage (class 08), retried later. */
export class NoWritableHostError extends Error {
  readonly code = "08001";
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "NoWritableHostError";
  }
}

/**
 * The node of one URL that accepts writes, found by asking every node at once and remembered
 * until a connection to it fails. Concurrent callers share one probe.
 */
class WritableHost {
  #known: DatabaseHost | undefined;
  #probing: Promise<DatabaseHost> | undefined;
  readonly #url: DatabaseUrl;

  constructor(url: DatabaseUrl) {
    this.#url = url;
  }

  get(): Promise<DatabaseHost> {
    if (this.#known !== undefined) return Promise.resolve(this.#known);
    this.#probing ??= this.#probe().finally(() => {
      this.#probing = undefined;
    });
    return this.#probing;
  }

  forget(host: DatabaseHost): void {
    if (this.#known === host) this.#known = undefined;
  }

  /**
   * Asks every node at once and takes the first that accepts writes, without waiting for the
   * others (a node that is down may take the whole connect timeout to say so).
   */
  async #probe(): Promise<DatabaseHost> {
    const hosts = this.#url.hosts;
    const probes = hosts.map((host) =>
      this.#isWritable(host).then((writable) =>
        writable ? host : Promise.reject(new Error("is a standby")),
      ),
    );
    try {
      const host = await Promise.any(probes);
      this.#known = host;
      return host;
    } catch (error) {
      const reasons = (error as AggregateError).errors.map(
        (reason, i) => `${hosts[i]?.host}:${hosts[i]?.port} ${errorText(reason)}`,
      );
      throw new NoWritableHostError(`no database host accepts writes (${reasons.join("; ")})`);
    }
  }

  async #isWritable(host: DatabaseHost): Promise<boolean> {
    const client = new pg.Client({
      ...baseConfig(this.#url),
      host: host.host,
      port: host.port,
      connectionTimeoutMillis: probeTimeoutMs,
      query_timeout: probeTimeoutMs,
      application_name: "ovation-probe",
    });
    client.on("error", () => {});
    try {
      await client.connect();
      const { rows } = await client.query<{ writable: boolean }>(writableQuery);
      return rows[0]?.writable === true;
    } finally {
      await client.end().catch(() => {});
    }
  }
}

function errorText(error: unknown): string {
  return error instanceof Error ? error.message || error.constructor.name : String(error);
}

/** Credentials, database and libpq's socket directory (`?host=`) of a parsed URL. */
function baseConfig(url: DatabaseUrl): pg.ClientConfig {
  const socket = url.params.get("host");
  return {
    user: url.user === "" ? undefined : url.user,
    password: url.password === "" ? undefined : url.password,
    database: url.database === "" ? undefined : url.database,
    ...(socket === null ? {} : { host: socket }),
  };
}

/** One writable-host finder per URL in the process, so every pool converges on the same node. */
const writableHosts = new Map<string, WritableHost>();

type ClientClass = typeof pg.Client;
type ConnectCallback = Parameters<pg.Client["connect"]>[0] & {};

/**
 * A pg Client class for `url`: pg.Client itself for a plain URL; otherwise one that connects to
 * the node accepting writes (see above). Pass it as a pool's `Client`.
 */
export function clientClassFor(url: string): ClientClass {
  const parsed = parseDatabaseUrl(url);
  if (parsed.hosts.length === 1 && !parsed.readWrite) return pg.Client;
  const key = `${parsed.hosts.map((h) => `${h.host}:${h.port}`).join(",")}/${parsed.database}`;
  let writable = writableHosts.get(key);
  if (writable === undefined) {
    writable = new WritableHost(parsed);
    writableHosts.set(key, writable);
  }
  return multiHostClient(writable, parsed.readWrite);
}

function multiHostClient(writable: WritableHost, readWrite: boolean): ClientClass {
  class MultiHostClient extends pg.Client {
    // pg-pool calls connect(callback); everyone else awaits connect().
    override connect(): Promise<pg.Client>;
    override connect(callback: ConnectCallback): void;
    override connect(callback?: ConnectCallback): Promise<pg.Client> | undefined {
      const connected = this.#connectToWritable().then(() => this);
      if (callback === undefined) return connected;
      connected.then(
        (client) => (callback as (err: null, client: pg.Client) => void)(null, client),
        (error: Error) => (callback as (err: Error) => void)(error),
      );
      return undefined;
    }

    async #connectToWritable(): Promise<void> {
      const target = await writable.get();
      this.host = target.host;
      this.port = target.port;
      try {
        await super.connect();
      } catch (error) {
        writable.forget(target);
        throw error;
      }
      if (!readWrite) return;
      const { rows } = await super.query<{ writable: boolean }>(writableQuery);
      if (rows[0]?.writable !== true) {
        writable.forget(target);
        await this.end().catch(() => {});
        throw new NoWritableHostError(`${target.host}:${target.port} no longer accepts writes`);
      }
    }
  }
  return MultiHostClient;
}

/**
 * The Client class of a pool of `url`: clientClassFor's, which also outlives the loss of its
 * connection while checked out with no query running. pg-pool listens for errors only on idle
 * clients, and pg emits 'error' on a client between queries, say when a failover's "terminating
 * connection due to unexpected postmaster exit" (57P01) arrives between two statements of a
 * transaction: with no listener, that ends the process. With one, the client's next query fails
 * as an outage (errors.ts), and the pool drops the client when it is released with it.
 */
export function pooledClientClassFor(url: string): ClientClass {
  const Base = clientClassFor(url);
  return class PooledClient extends Base {
    constructor(config?: string | pg.ClientConfig) {
      super(config);
      this.on("error", () => {});
    }
  };
}

/** Options of a pg client or pool, without a connection string: the URL is given apart. */
export type ConnectionConfig = Omit<pg.ClientConfig, "connectionString" | "host" | "port"> & {
  /** Socket directory or host overriding the URL's (MikroORM's driver options pass it). */
  host?: string;
};

/** Host, port and credentials of `url` for a pg client or pool (the first host for many). */
export function connectionConfig(url: string, config: ConnectionConfig = {}): pg.ClientConfig {
  const parsed = parseDatabaseUrl(url);
  const first = parsed.hosts[0] as DatabaseHost;
  return {
    ...baseConfig(parsed),
    host: parsed.params.get("host") ?? first.host,
    port: first.port,
    ...config,
  };
}

/** A client of `url`, connected to its read-write node when the URL asks for one. */
export function databaseClient(url: string, config: ConnectionConfig = {}): pg.Client {
  const Client = clientClassFor(url);
  return new Client(connectionConfig(url, config));
}

/** A pool of `url`; each connection goes to its read-write node when the URL asks for one. */
export function databasePool(url: string, config: ConnectionConfig & pg.PoolConfig = {}): pg.Pool {
  return new pg.Pool({ ...connectionConfig(url, config), Client: pooledClientClassFor(url) });
}
