// Development launcher, run by `./ov up`. It reuses the Postgres and NATS that already answer at
// DATABASE_URL and NATS_URL, starts local ones only when nothing answers (scripts/infra.ts,
// shared with `./ov test`), creates the database, then starts every service that declares an
// "ovation" field in its package.json and stops all of it again, in order (services, then NATS,
// then Postgres), on Ctrl-C or when any service dies. Signing keys are generated once
// into .data/keys; each service gets the public key set, its own private key and its own NATS
// seed only. NATS is secured (nkey users with the permissions of packages/events/src/
// permissions.ts): an open NATS, which any process could publish anything on, is not used
// silently (planNats). `--cluster` starts a JetStream cluster of three nats-servers instead
// (nats-cluster.ts); `--replicas N` starts every service N times, on ports of their own.
// `--pgbouncer` (implied by `--cluster`) puts PgBouncer in transaction mode between the services
// and Postgres (pgbouncer.ts).
import type { Dirent } from "node:fs";
import { mkdir, readdir, readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { errors as natsErrors, nkeyAuthenticator } from "@nats-io/nats-core";
import { connect as connectNats } from "@nats-io/transport-node";
import { ensureKeySet, type KeySetFiles, natsIdentitiesOf, readNatsPublicKeys } from "@ovation/auth";
import { natsServerList, readNatsSeedFile, redactUrl } from "@ovation/config";
import { preferUnixSocket } from "@ovation/db";
import { isBusIdentity, renderNatsServerConfig } from "@ovation/events";
import { type PostgresFormation, startPostgresFormation } from "@ovation/testkit/pg-formation";
import pg from "pg";
import {
  createLog,
  describeExit,
  type EmbeddedPostgresServer,
  type Endpoint,
  ensurePostgres,
  errorCode,
  errorMessage,
  isLocalHost,
  isReadable,
  isRunning,
  label,
  letOthersTraverse,
  type ManagedProcess,
  natsDefaultPort,
  natsServerBinary,
  parseEndpoint,
  portAcceptsConnections,
  shutdownGraceMs,
  spawnManaged,
  spawnNatsServer,
  stopProcesses,
  waitUntilListening,
  withDatabase,
} from "./infra.ts";
import {
  type ClusterNode,
  clusterDirectory,
  clusterNodes,
  clusterReplicas,
  clusterUrl,
  waitForJetStream,
  writeClusterConfigs,
} from "./nats-cluster.ts";
import {
  databaseEnv,
  pgBouncerBinary,
  pgBouncerDirectory,
  pgBouncerEndpoint,
  writeUpPgBouncerFiles,
} from "./pgbouncer.ts";

export const defaultDatabaseUrl = "postgres://postgres@127.0.0.1:5432/ovation";
export const defaultNatsUrl = "nats://127.0.0.1:4222";

const serviceStartTimeoutMs = 60_000;
const natsStartTimeoutMs = 15_000;
/** Three nodes start, then elect JetStream's metadata leader among them. */
const natsClusterStartTimeoutMs = 30_000;
/** A cluster node that died is started again after this pause. */
const clusterNodeRestartMs = 1_000;
/** A NATS handshake on this machine takes milliseconds; a remote one gets more. */
const natsProbeTimeoutMs = 3_000;
/** Ports tried after NATS_URL's when an open NATS holds it. */
const natsPortsTried = 20;
const portMin = 1;
const portMax = 65_535;

const postgresDataDirectory = ".data/postgres";
/**
 * `--ha`: a pg_auto_failover formation of our own (decision 0046), on fixed ports beside the
 * usual 5432 so that a restarted `up --ha` finds its nodes where it left them.
 */
const formationDirectory = ".data/pg-ha";
const formationMonitorPort = 5440;
const formationNodePorts = [5441, 5442] as const;
const formationDatabase = "ovation";
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
const usage = "usage: ./ov up [--cluster] [--pgbouncer] [--replicas N] [--ha]";
/** Replica k (0-based) of a service listens this many ports × k above its declared port. */
export const replicaPortStep = 100;
export const replicasMax = 8;
const log = createLog(launcherName);

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
  /** The probes' own port (MANAGEMENT_PORT), where the service has one: the gateway (0055). */
  managementPort?: number;
};

/** The "ovation" field of a service's package.json. */
export type LaunchSettings = Pick<ServiceSpec, "port" | "urlEnv" | "http" | "managementPort">;

export type InfraConfig = { databaseUrl: string; natsUrl: string };
export type ServiceSettings = InfraConfig & {
  keys: KeySetFiles;
  devTokens: boolean;
  /** NATS_REPLICAS for every service (3 with --cluster); unset: what the shell says, or 1. */
  natsReplicas?: number | undefined;
  /** PgBouncer in front of Postgres (--pgbouncer): DATABASE_URL goes through it. */
  pgBouncer?: { host: string; port: number } | undefined;
};

/** What the command line asks for. */
export type UpOptions = {
  /** Start a JetStream cluster of three nats-servers instead of one. */
  cluster: boolean;
  /** Processes per service. */
  replicas: number;
  /** Run on a Postgres primary with a synchronous standby that fails over (pg_auto_failover). */
  ha: boolean;
  /** PgBouncer in transaction mode in front of Postgres (implied by --cluster, unless --ha). */
  pgbouncer: boolean;
};

type Origin = "existing" | "started" | "formation";

type LaunchState = {
  config: InfraConfig;
  services: ManagedProcess[];
  /** The nats-server (or the cluster's three) that `up` started itself. */
  nats: ManagedProcess[];
  /** PgBouncer, when `up` started it. */
  pgBouncer: ManagedProcess[];
  postgres: EmbeddedPostgresServer | undefined;
  /** The Postgres formation of `--ha`. */
  formation: PostgresFormation | undefined;
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

/** Parses `./ov up`'s arguments; throws with the usage on anything else. */
export function parseUpArguments(argv: readonly string[]): UpOptions {
  const options: UpOptions = { cluster: false, replicas: 1, ha: false, pgbouncer: false };
  let pgbouncerAsked = false;
  for (let index = 0; index < argv.length; index++) {
    const argument = argv[index]!;
    if (argument === "--cluster") options.cluster = true;
    else if (argument === "--ha") options.ha = true;
    else if (argument === "--pgbouncer") pgbouncerAsked = true;
    else if (argument === "--replicas" || argument.startsWith("--replicas=")) {
      const value = argument === "--replicas" ? argv[++index] : argument.slice("--replicas=".length);
      const replicas = Number(value);
      if (!/^\d+$/.test(value ?? "") || replicas < 1 || replicas > replicasMax)
        throw new Error(`--replicas takes a whole number from 1 to ${replicasMax}\n${usage}`);
      options.replicas = replicas;
    } else throw new Error(`unknown argument ${argument}\n${usage}`);
  }
  // PgBouncer 1.18 reaches one host: it cannot follow a primary that fails over (0043).
  if (options.ha && pgbouncerAsked)
    throw new Error(
      `--pgbouncer cannot front the failover formation of --ha (PgBouncer reaches one host)\n${usage}`,
    );
  options.pgbouncer = pgbouncerAsked || (options.cluster && !options.ha);
  return options;
}

/**
 * Replica `index` (0-based) of every service: each on its declared port plus index ×
 * replicaPortStep. Its URL variables name the same replica of the other services: `up` has no
 * load balancer, so replica k of gift calls replica k of the wallet.
 */
export function replicaSet(services: readonly ServiceSpec[], index: number): ServiceSpec[] {
  return services.map((service) => ({
    ...service,
    port: service.port + index * replicaPortStep,
    ...(service.managementPort === undefined
      ? {}
      : { managementPort: service.managementPort + index * replicaPortStep }),
  }));
}

/** A replica's name in logs and the summary: the service's name, numbered when there are several. */
export function replicaLabel(service: ServiceSpec, index: number, replicas: number): string {
  return replicas === 1 ? service.name : `${service.name}-${index + 1}`;
}

/** Each server of a NATS_URL (one, or every node of a cluster) as a host and port. */
export function natsEndpoints(url: string): Endpoint[] {
  return natsServerList(url).map((entry) =>
    parseEndpoint(entry.includes("://") ? entry : `nats://${entry}`, natsDefaultPort),
  );
}

export function databaseNameOf(databaseUrl: string): string {
  const name = decodeURIComponent(new URL(databaseUrl).pathname.replace(/^\//, ""));
  if (name === "") throw new Error(`DATABASE_URL ${redactUrl(databaseUrl)} names no database`);
  return name;
}

/**
 * Validates a package.json's "ovation" field. Returns undefined when the field is absent (a
 * package that `up` does not start); throws with the property's name when it is malformed.
 */
export function parseLaunchSettings(manifestPath: string, manifest: unknown): LaunchSettings | undefined {
  if (!isRecord(manifest) || manifest.ovation === undefined) return undefined;
  const field = manifest.ovation;
  if (!isRecord(field)) throw new Error(`${manifestPath}: "ovation" must be an object`);
  const { port, urlEnv, http, managementPort } = field;
  const isPort = (value: unknown): value is number =>
    typeof value === "number" && Number.isInteger(value) && value >= portMin && value <= portMax;
  if (!isPort(port)) {
    throw new Error(`${manifestPath}: "ovation.port" must be an integer in ${portMin}..${portMax}`);
  }
  if (managementPort !== undefined && (!isPort(managementPort) || managementPort === port)) {
    throw new Error(
      `${manifestPath}: "ovation.managementPort" must be an integer in ${portMin}..${portMax} other than "ovation.port"`,
    );
  }
  if (typeof urlEnv !== "string" || !/^[A-Z][A-Z0-9_]*$/.test(urlEnv)) {
    throw new Error(`${manifestPath}: "ovation.urlEnv" must be an UPPER_SNAKE_CASE variable name`);
  }
  if (http !== undefined && typeof http !== "boolean") {
    throw new Error(`${manifestPath}: "ovation.http" must be a boolean when present`);
  }
  return { port, urlEnv, http: http ?? false, ...(managementPort === undefined ? {} : { managementPort }) };
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
  // A management port may not be another service's port either.
  const ports = new Map<number, string>();
  for (const service of services) {
    for (const port of [service.port, service.managementPort]) {
      const owner = ports.get(port ?? Number.NaN);
      if (owner !== undefined)
        throw new Error(`services ${owner} and ${service.name} both declare port ${port}`);
      if (port !== undefined) ports.set(port, service.name);
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
  // `up` decides where the database is reached, directly or through its PgBouncer.
  delete env.DATABASE_DIRECT_URL;
  const issuesDevTokens = service.name === devTokenIssuer;
  return {
    ...env,
    ...serviceUrlEnv(services),
    PORT: String(service.port),
    ...(service.managementPort === undefined ? {} : { MANAGEMENT_PORT: String(service.managementPort) }),
    // A local server through its Unix socket: cheaper per statement than loopback TCP (0036);
    // through PgBouncer with --pgbouncer, and directly for session work (0043).
    ...databaseEnv(service.name, preferUnixSocket(settings.databaseUrl), settings.pgBouncer),
    NATS_URL: settings.natsUrl,
    JWKS_FILE: settings.keys.jwks,
    SERVICE_KEY_FILE: settings.keys.service(service.name),
    NATS_NKEY_FILE: settings.keys.natsSeed(service.name),
    ...(settings.natsReplicas === undefined ? {} : { NATS_REPLICAS: String(settings.natsReplicas) }),
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
  const remote = [
    ...(isLocalHost(parseEndpoint(config.databaseUrl, 0).host) ? [] : [config.databaseUrl]),
    ...(natsEndpoints(config.natsUrl).every((endpoint) => isLocalHost(endpoint.host))
      ? []
      : [config.natsUrl]),
  ];
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
  | { action: "start"; url: string; note: string; store?: string }
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
// Infrastructure.

async function startPostgres(root: string, databaseUrl: string, state: LaunchState): Promise<Origin> {
  const server = await ensurePostgres(
    {
      databaseUrl,
      dataDirectory: path.join(root, postgresDataDirectory),
      log,
      output: process.stdout,
      labelWidth: state.labelWidth,
    },
    (starting) => {
      state.postgres = starting;
    },
  );
  return server === undefined ? "existing" : "started";
}

/**
 * `--ha`: starts (or restarts, on its data) the formation in .data/pg-ha; services get its
 * multi-host URL. Its pg_autoctl lines are printed like the other children's.
 */
async function startFormation(root: string, state: LaunchState, env: NodeJS.ProcessEnv): Promise<string> {
  if (env.DATABASE_URL)
    throw new Error(
      "--ha starts a Postgres formation of its own: unset DATABASE_URL (to use a formation of yours, put its multi-host URL with target_session_attrs=read-write in DATABASE_URL and run without --ha)",
    );
  const directory = path.join(root, formationDirectory);
  // Run as root, pg_autoctl runs as 'postgres', which must pass through .data.
  await letOthersTraverse(path.dirname(directory), log);
  log.info(
    `starting a Postgres formation (pg_auto_failover): monitor on ${formationMonitorPort}, nodes on ${formationNodePorts.join(", ")}, data in ${formationDirectory}`,
  );
  state.formation = await startPostgresFormation({
    directory,
    monitorPort: formationMonitorPort,
    nodePorts: formationNodePorts,
    database: formationDatabase,
    output: (name, line) => process.stdout.write(`${label(`pg-${name}`, state.labelWidth)} ${line}\n`),
  });
  return state.formation.url;
}

async function ensureDatabase(databaseUrl: string): Promise<void> {
  const name = databaseNameOf(databaseUrl);
  const client = new pg.Client({ connectionString: withDatabase(databaseUrl, "postgres") });
  await client.connect();
  try {
    const found = await client.query("SELECT 1 FROM pg_database WHERE datname = $1", [name]);
    if (found.rowCount !== 0) return;
    await client.query(`CREATE DATABASE ${client.escapeIdentifier(name)}`);
    log.info(`created database ${name}`);
  } catch (error) {
    // 42P04 duplicate_database: another process created it between the check and the create.
    if (errorCode(error) !== "42P04") throw error;
  } finally {
    await client.end();
  }
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
  options: UpOptions,
): Promise<NatsPlan> {
  const url = state.config.natsUrl;
  if (options.cluster) return startSecuredCluster(root, services, keys, state, env);
  const servers = natsServerList(url);
  if (servers.length > 1) {
    // A cluster of the user's own: used when it takes our ops key, never started here.
    const probe = await probeNats(servers[0]!, keys);
    if (probe !== "ours")
      throw new Error(
        `NATS_URL lists a cluster whose first server ${servers[0]} ${probe === "nothing" ? "does not answer" : `is ${probe}`}: ` +
          `up uses a cluster only when it is secured with the keys of ${keyDirectory} (or use --cluster)`,
      );
    return {
      action: "use",
      url,
      note: `a cluster of ${servers.length} servers, secured; our ops key is accepted`,
    };
  }
  const probe = await probeNats(url, keys);
  const plan = planNats({
    url,
    explicit: (env.NATS_URL ?? "") !== "",
    probe,
    openBusAllowed: env.OVATION_OPEN_BUS === "true",
    freePort: probe === "open" ? await freePortAfter(parseEndpoint(url, natsDefaultPort)) : undefined,
  });
  if (plan.action === "use") {
    log.info(`NATS at ${redactUrl(plan.url)}: ${plan.note}`);
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
  const binary = await natsServerBinary(
    `NATS does not answer at ${endpoint.host}:${endpoint.port} (or set NATS_URL to a running server)`,
  );
  await mkdir(path.join(root, natsStoreDirectory), { recursive: true });
  await writeFile(
    path.join(root, natsConfigFile),
    renderNatsServerConfig({
      prefix: plan.prefix,
      publicKeys: natsPublicKeys(services, keys),
      host: endpoint.host === "localhost" ? "127.0.0.1" : endpoint.host,
      port: endpoint.port,
      storeDirectory: path.join(root, natsStoreDirectory),
    }),
  );
  log.info(
    `starting ${binary} on ${endpoint.host}:${endpoint.port}: secured (${natsConfigFile}), JetStream store in ${natsStoreDirectory}`,
  );
  const nats = spawnNatsServer(binary, natsConfigFile, { cwd: root, labelWidth: state.labelWidth });
  state.nats.push(nats);
  watchForUnexpectedExit(nats, state);
  const ready = await waitUntilListening(nats, endpoint, natsStartTimeoutMs, state.shutdown.signal);
  if (!ready && !state.stopping)
    throw new Error(`nats-server did not accept connections within ${natsStartTimeoutMs} ms`);
}

/**
 * `--cluster`: renders the three nodes' configurations (nats-cluster.ts), starts them and waits
 * until JetStream answers on them. Their stores stay in .data/nats-cluster between runs.
 */
async function startSecuredCluster(
  root: string,
  services: ServiceSpec[],
  keys: KeySetFiles,
  state: LaunchState,
  env: NodeJS.ProcessEnv,
): Promise<NatsPlan> {
  if ((env.NATS_URL ?? "") !== "")
    throw new Error(
      "--cluster starts three nats-servers of its own: unset NATS_URL (to use a cluster of yours, list its servers in NATS_URL and run without --cluster)",
    );
  const binary = await natsServerBinary("--cluster starts three nats-servers");
  for (const node of clusterNodes) {
    for (const port of [node.clientPort, node.routePort]) {
      if (await portAcceptsConnections({ host: "127.0.0.1", port }))
        throw new Error(`port ${port} of cluster node ${node.name} is in use (another "ov up --cluster"?)`);
    }
  }
  await writeClusterConfigs(root, {
    prefix: env.OVATION_PREFIX ?? "",
    publicKeys: natsPublicKeys(services, keys),
  });
  log.info(
    `starting ${clusterNodes.length} nats-servers (${binary}) as a JetStream cluster: clients on ` +
      `${clusterNodes.map((node) => node.clientPort).join(", ")}, routes on ` +
      `${clusterNodes.map((node) => node.routePort).join(", ")}, stores in ${clusterDirectory}`,
  );
  for (const node of clusterNodes) startClusterNode(root, binary, node, state);
  const seed = readNatsSeedFile(keys.natsSeed("ops"));
  const ready = await Promise.race([
    waitForJetStream(clusterUrl, seed, natsClusterStartTimeoutMs, state.shutdown.signal),
    ...state.nats.map((managed) => managed.exited.then(() => false)),
  ]);
  if (!ready && !state.stopping)
    throw new Error(`the JetStream cluster did not answer within ${natsClusterStartTimeoutMs} ms`);
  return {
    action: "start",
    url: clusterUrl,
    note: `JetStream cluster of ${clusterNodes.length} secured nats-servers started here; NATS_REPLICAS=${clusterReplicas}`,
    store: clusterDirectory,
  };
}

/**
 * Starts one node. A node that dies is not the end of the stack, as one service dying is: the
 * cluster carries on with the other two (that is what it is for), and `up` starts the node
 * again on its store a moment later, as a supervisor would, so `kill -9` of a node is a fair
 * way to try a node loss. Before the cluster first answers, a node that exits fails the launch.
 */
function startClusterNode(root: string, binary: string, node: ClusterNode, state: LaunchState): void {
  const managed = spawnManaged(`nats-${node.name}`, binary, ["-c", node.configFile], {
    cwd: root,
    env: process.env,
    labelWidth: state.labelWidth,
  });
  state.nats.push(managed);
  void managed.exited.then(() => {
    if (state.stopping) return;
    state.nats.splice(state.nats.indexOf(managed), 1);
    log.error(
      `nats-${node.name} exited (${describeExit(managed.child)}); the cluster carries on without it; starting it again in ${clusterNodeRestartMs} ms`,
    );
    setTimeout(() => {
      if (!state.stopping) startClusterNode(root, binary, node, state);
    }, clusterNodeRestartMs);
  });
}

/** The public nkeys of the services' identities (and ops): the users of a rendered configuration. */
function natsPublicKeys(services: ServiceSpec[], keys: KeySetFiles): ReadonlyMap<string, string> {
  const identities = natsIdentitiesOf(services.map((service) => service.name)).filter((identity) => {
    if (isBusIdentity(identity)) return true;
    // Not an error: a service without a bus identity (the card processor) never touches NATS.
    log.info(`${identity} has no bus identity (packages/events/src/permissions.ts), so no NATS user`);
    return false;
  });
  return readNatsPublicKeys(keys.directory, identities);
}

// ---------------------------------------------------------------------------------------------
// Services and lifecycle.

/**
 * `--pgbouncer`: PgBouncer in transaction mode on 127.0.0.1:6432, one pool per service sized by
 * the connection budget (pgbouncer.ts). Its exit stops the stack, as a NATS server's does.
 */
async function startPgBouncer(
  root: string,
  services: ServiceSpec[],
  state: LaunchState,
): Promise<{ host: string; port: number }> {
  if (await portAcceptsConnections(pgBouncerEndpoint))
    throw new Error(`port ${pgBouncerEndpoint.port} for pgbouncer is in use (another "ov up --pgbouncer"?)`);
  const directUrl = preferUnixSocket(state.config.databaseUrl);
  const files = await writeUpPgBouncerFiles(
    root,
    directUrl,
    services.map((service) => service.name),
    process.env,
  );
  log.info(
    `starting pgbouncer (${pgBouncerBinary}) in transaction mode on ${pgBouncerEndpoint.host}:${pgBouncerEndpoint.port}, configuration in ${pgBouncerDirectory}`,
  );
  const managed = spawnManaged("pgbouncer", pgBouncerBinary, files.args, {
    cwd: root,
    env: process.env,
    labelWidth: state.labelWidth,
  });
  state.pgBouncer.push(managed);
  watchForUnexpectedExit(managed, state);
  const ready = await waitUntilListening(
    managed,
    pgBouncerEndpoint,
    natsStartTimeoutMs,
    state.shutdown.signal,
  );
  if (!ready && !state.stopping)
    throw new Error(`pgbouncer did not accept connections within ${natsStartTimeoutMs} ms`);
  return pgBouncerEndpoint;
}

function watchForUnexpectedExit(managed: ManagedProcess, state: LaunchState): void {
  void managed.exited.then(() => {
    if (state.stopping) return;
    log.error(`${managed.name} exited unexpectedly (${describeExit(managed.child)}); stopping everything`);
    void shutdown(state, 1);
  });
}

async function startServices(
  root: string,
  sets: ServiceSpec[][],
  settings: ServiceSettings,
  state: LaunchState,
) {
  // A port still held by an earlier run would pass the readiness check while our child dies.
  for (const [index, set] of sets.entries()) {
    for (const service of set) {
      for (const port of [service.port, service.managementPort]) {
        if (port !== undefined && (await portAcceptsConnections({ host: "127.0.0.1", port }))) {
          throw new Error(
            `port ${port} of ${replicaLabel(service, index, sets.length)} is already in use (another "ov up"?)`,
          );
        }
      }
    }
  }
  const started: { service: ServiceSpec; managed: ManagedProcess }[] = [];
  for (const [index, set] of sets.entries()) {
    for (const service of set) {
      const env = buildServiceEnv(service, set, settings, process.env);
      const options = { cwd: root, env, labelWidth: state.labelWidth };
      const label = replicaLabel(service, index, sets.length);
      const managed = spawnManaged(label, process.execPath, [service.entry], options);
      state.services.push(managed);
      started.push({ service, managed });
      watchForUnexpectedExit(managed, state);
    }
  }
  await Promise.all(started.map(({ service, managed }) => waitForService(service, managed, state)));
}

async function waitForService(
  service: ServiceSpec,
  managed: ManagedProcess,
  state: LaunchState,
): Promise<void> {
  const endpoint = { host: "127.0.0.1", port: service.port };
  const ready = await waitUntilListening(managed, endpoint, serviceStartTimeoutMs, state.shutdown.signal);
  if (!ready && !state.stopping) {
    throw new Error(
      `service ${managed.name} did not accept connections on port ${service.port} within ${serviceStartTimeoutMs / 1000} s`,
    );
  }
}

function printSummary(
  config: InfraConfig,
  origins: { postgres: Origin; nats: NatsPlan },
  sets: ServiceSpec[][],
  launch: {
    devTokens: DevTokens;
    keysGenerated: boolean;
    pgBouncer?: { host: string; port: number } | undefined;
  },
) {
  const rows = [
    ["what", "where", "note"],
    [
      "postgres",
      redactUrl(config.databaseUrl),
      origins.postgres === "formation"
        ? `pg_auto_failover: primary and synchronous standby, monitor on ${formationMonitorPort}, data in ${formationDirectory}`
        : origins.postgres === "started"
          ? `embedded, data in ${postgresDataDirectory}`
          : "already running",
    ],
    [
      "nats",
      config.natsUrl,
      origins.nats.action === "start"
        ? `${origins.nats.note}; store in ${origins.nats.store ?? natsStoreDirectory}`
        : origins.nats.note,
    ],
    ...(launch.pgBouncer === undefined
      ? []
      : [
          [
            "pgbouncer",
            `${launch.pgBouncer.host}:${launch.pgBouncer.port}`,
            "transaction mode, a pool per service (connection budget); LISTEN and the start-up lock go direct",
          ],
        ]),
    [
      "keys",
      keyDirectory,
      `${launch.keysGenerated ? "generated now" : "reused"}; each service holds only its own private key and NATS seed`,
    ],
    ...sets.flatMap((set, index) =>
      set.map((service) => [
        replicaLabel(service, index, sets.length),
        `http://127.0.0.1:${service.port}`,
        `${service.http ? "HTTP" : "gRPC, Connect, gRPC-Web (h2c)"}; ${service.urlEnv}` +
          (sets.length > 1 ? ` of replica ${index + 1}` : "") +
          (service.managementPort === undefined ? "" : `; probes also on :${service.managementPort}`) +
          (service.name === devTokenIssuer ? `; dev tokens ${launch.devTokens.why}` : ""),
      ]),
    ),
  ];
  process.stdout.write(`\n${formatTable(rows)}\n\n`);
  process.stdout.write(
    "Try: ./ov buf curl --protocol grpc --http2-prior-knowledge http://127.0.0.1:50051 --list-methods\n",
  );
  for (const gateway of sets.flatMap((set) => set.filter((service) => service.name === "gateway")))
    process.stdout.write(`Console: http://127.0.0.1:${gateway.port}/console  (fill it with: ./ov demo)\n`);
  log.info("all up; Ctrl-C stops everything");
}

async function shutdown(state: LaunchState, exitCode: number): Promise<void> {
  if (state.stopping) return;
  state.stopping = true;
  state.shutdown.abort();
  // Services first: they may still flush to Postgres and NATS while draining.
  if (state.services.length > 0) log.info("stopping services");
  await stopProcesses(state.services, shutdownGraceMs, log.info);
  if (state.pgBouncer.length > 0) {
    log.info("stopping pgbouncer");
    await stopProcesses(state.pgBouncer, shutdownGraceMs, log.info);
  }
  if (state.nats.length > 0) {
    log.info(state.nats.length === 1 ? "stopping nats-server" : `stopping ${state.nats.length} nats-servers`);
    await stopProcesses(state.nats, shutdownGraceMs, log.info);
  }
  await state.postgres?.stop();
  if (state.formation !== undefined) {
    log.info("stopping the Postgres formation");
    await state.formation.stop();
  }
  log.info(exitCode === 0 ? "stopped" : `stopped (exit code ${exitCode})`);
  process.exit(exitCode);
}

async function launch(root: string, state: LaunchState, options: UpOptions): Promise<void> {
  const config = state.config;
  // Discovery and the dev-token decision first: a malformed package.json or a refused request
  // fails before anything is started.
  const services = await discoverServices(root);
  const devTokens = resolveDevTokens(config, process.env);
  const sets = Array.from({ length: options.replicas }, (_, index) => replicaSet(services, index));
  state.labelWidth = Math.max(
    launcherName.length,
    options.ha ? "pg-monitor".length : "postgres".length,
    "pgbouncer".length,
    ...(options.cluster ? clusterNodes.map((node) => `nats-${node.name}`.length) : []),
    ...sets.flatMap((set, index) => set.map((service) => replicaLabel(service, index, sets.length).length)),
  );
  const keys = await prepareKeys(root, services);
  log.info(
    keys.created.length + keys.natsCreated.length > 0
      ? `generated keys in ${keyDirectory}: ${[...keys.created, ...keys.natsCreated.map((name) => `nats:${name}`)].join(", ")}`
      : `reusing the keys in ${keyDirectory}`,
  );
  const postgres: Origin = options.ha ? "formation" : await startPostgres(root, config.databaseUrl, state);
  if (options.ha)
    state.config = { ...state.config, databaseUrl: await startFormation(root, state, process.env) };
  if (state.stopping) return;
  const nats = await ensureNats(root, services, keys.files, state, process.env, options);
  if (state.stopping) return;
  // An open NATS at the default address leaves us on another port.
  state.config = { ...state.config, natsUrl: nats.url };
  // The formation made its database; elsewhere it may be missing.
  if (!options.ha) await ensureDatabase(config.databaseUrl);
  const pgBouncer = options.pgbouncer ? await startPgBouncer(root, services, state) : undefined;
  if (state.stopping) return;
  log.info(
    devTokens.enabled
      ? "dev tokens ON (local infrastructure): POST /api/auth/token on the gateway mints user, host and admin tokens"
      : `dev tokens ${devTokens.why}`,
  );
  if (services.length === 0)
    log.info('no service under services/ declares an "ovation" field; starting infrastructure only');
  await startServices(
    root,
    sets,
    {
      ...state.config,
      keys: keys.files,
      devTokens: devTokens.enabled,
      natsReplicas: options.cluster ? clusterReplicas : undefined,
      pgBouncer,
    },
    state,
  );
  if (state.stopping) return;
  printSummary(state.config, { postgres, nats }, sets, {
    devTokens,
    keysGenerated: keys.created.length + keys.natsCreated.length > 0,
    pgBouncer,
  });
}

async function main(): Promise<void> {
  const root = path.resolve(import.meta.dirname, "..");
  let options: UpOptions;
  try {
    options = parseUpArguments(process.argv.slice(2));
  } catch (error) {
    log.error(errorMessage(error));
    process.exit(2);
  }
  const state: LaunchState = {
    config: readInfraConfig(process.env),
    services: [],
    nats: [],
    pgBouncer: [],
    postgres: undefined,
    formation: undefined,
    stopping: false,
    shutdown: new AbortController(),
    labelWidth: launcherName.length,
  };
  process.on("SIGINT", () => void shutdown(state, 0));
  process.on("SIGTERM", () => void shutdown(state, 0));
  // Children live in their own process groups, so nothing else stops them if we die abruptly.
  process.on("exit", () => {
    for (const managed of [...state.services, ...state.pgBouncer, ...state.nats]) {
      if (isRunning(managed)) managed.child.kill("SIGKILL");
    }
    state.postgres?.signalStop();
    state.formation?.signalStop();
  });
  try {
    await launch(root, state, options);
  } catch (error) {
    if (state.stopping) return;
    log.error(errorMessage(error));
    await shutdown(state, 1);
  }
}

// ---------------------------------------------------------------------------------------------
// Small helpers.

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

if (import.meta.main) await main();
