// A PgBouncer process of our own (Debian's package, /usr/sbin/pgbouncer 1.18) in front of a
// Postgres, for `./ov up --pgbouncer` (scripts/pgbouncer.ts) and for tests and soaks, each on its
// own port with its own files: the configuration (pooler.ts renders it) and the user list in a
// directory of the caller's. PgBouncer refuses to run as root; as root it is told to become the
// `postgres` user after reading its files.
import { type ChildProcess, spawn } from "node:child_process";
import { mkdir, writeFile } from "node:fs/promises";
import net from "node:net";
import path from "node:path";
import pg from "pg";
import { type PooledDatabase, pooledUrl, renderPgBouncerConfig, renderPgBouncerUsers } from "./pooler.ts";

export const pgBouncerBinary = process.env.PGBOUNCER_BINARY ?? "/usr/sbin/pgbouncer";
/** The user PgBouncer runs as when started by root. */
const unprivilegedUser = "postgres";
const startTimeoutMs = 10_000;
const probeIntervalMs = 50;
const adminConnectTimeoutMs = 2_000;

export interface PgBouncerFiles {
  configFile: string;
  /** pgbouncer's arguments: the configuration, and the user to become when we are root. */
  args: string[];
}

/** Writes PgBouncer's configuration and user list into `directory` (both 0600: a password may be in them). */
export async function writePgBouncerFiles(
  directory: string,
  options: { directUrl: string; host: string; port: number; databases: readonly PooledDatabase[] },
): Promise<PgBouncerFiles> {
  await mkdir(directory, { recursive: true, mode: 0o700 });
  const authFile = path.resolve(directory, "users.txt");
  const configFile = path.resolve(directory, "pgbouncer.ini");
  await writeFile(authFile, renderPgBouncerUsers(options.directUrl), { mode: 0o600 });
  await writeFile(
    configFile,
    renderPgBouncerConfig({
      directUrl: options.directUrl,
      listenHost: options.host,
      listenPort: options.port,
      databases: options.databases,
      authFile,
    }),
    { mode: 0o600 },
  );
  const asRoot = process.getuid?.() === 0;
  return { configFile, args: [...(asRoot ? ["-u", unprivilegedUser] : []), configFile] };
}

export interface RunningPgBouncer {
  host: string;
  port: number;
  child: ChildProcess;
  /** The URL of `schema`'s pool (its PgBouncer database). */
  url(schema: string): string;
  /** Runs a SHOW command on PgBouncer's admin console (`SHOW POOLS`, `SHOW SERVERS`). */
  show(command: string): Promise<Record<string, unknown>[]>;
  /** Server connections PgBouncer holds to Postgres now, active and idle, over every pool. */
  serverConnections(): Promise<number>;
  stop(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

/** Starts PgBouncer on `host:port` and waits until it accepts connections. */
export async function startPgBouncer(options: {
  directUrl: string;
  databases: readonly PooledDatabase[];
  directory: string;
  host?: string;
  port: number;
}): Promise<RunningPgBouncer> {
  const host = options.host ?? "127.0.0.1";
  const files = await writePgBouncerFiles(options.directory, { ...options, host });
  const child = spawn(pgBouncerBinary, files.args, { stdio: ["ignore", "ignore", "inherit"] });
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((resolve) => child.once("exit", resolve));
    // SIGINT: PgBouncer's "safe shutdown" waits for clients; SIGTERM closes at once.
    child.kill("SIGTERM");
    await exited;
  };
  const deadline = Date.now() + startTimeoutMs;
  while (!(await accepts(host, options.port))) {
    if (child.exitCode !== null)
      throw new Error(`pgbouncer exited with ${child.exitCode} (its log is above)`);
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`pgbouncer did not listen on ${host}:${options.port} within ${startTimeoutMs} ms`);
    }
    await new Promise((resolve) => setTimeout(resolve, probeIntervalMs));
  }
  // PgBouncer's console is its database "pgbouncer" (a pooled URL has one host: URL reads it).
  const admin = new URL(pooledUrl(options.directUrl, "console", { host, port: options.port }));
  admin.pathname = "/pgbouncer";
  const adminUrl = admin.toString();
  const show = async (command: string) => {
    if (!/^show [a-z_]+$/i.test(command)) throw new Error(`not a SHOW command: ${command}`);
    const client = new pg.Client({
      connectionString: adminUrl,
      connectionTimeoutMillis: adminConnectTimeoutMs,
    });
    await client.connect();
    try {
      return (await client.query(command)).rows as Record<string, unknown>[];
    } finally {
      await client.end().catch(() => {});
    }
  };
  return {
    host,
    port: options.port,
    child,
    url: (schema) => pooledUrl(options.directUrl, schema, { host, port: options.port }),
    show,
    async serverConnections() {
      const pools = await show("SHOW POOLS");
      return pools
        .filter((pool) => pool.database !== "pgbouncer")
        .reduce(
          (sum, pool) =>
            sum +
            Number(pool.sv_active) +
            Number(pool.sv_idle) +
            Number(pool.sv_used) +
            Number(pool.sv_tested) +
            Number(pool.sv_login),
          0,
        );
    },
    stop,
    [Symbol.asyncDispose]: stop,
  };
}

function accepts(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}
