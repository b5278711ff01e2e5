// Test kit. The Postgres server is shared with other runs, so every test file owns a fresh
// database and a stream/subject prefix, and removes them when done. NATS is not shared: every
// environment starts its own nats-server (from PATH) on a free loopback port, secured exactly
// as a deployment is (nkey users with the permissions of packages/events/src/permissions.ts),
// so every test runs with the bus permissions in force. Leftovers of runs that crashed are
// removed once they are an hour old (the creation time is in the name).
// Each environment also has its own key set (issuer + one key per service, and one NATS seed per
// service and for `ops`) in a temporary directory, handed to the services through OVATION_KEY_DIR.
import { randomBytes } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import { readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { Code, ConnectError } from "@connectrpc/connect";
import { type NatsConnection, nkeyAuthenticator } from "@nats-io/nats-core";
import { connect } from "@nats-io/transport-node";
import {
  createUserTokenSigner,
  ensureKeySet,
  type KeySetFiles,
  type Role,
  readSigningKey,
  type SigningKey,
  signServiceToken,
} from "@ovation/auth";
import { natsServerList, readNatsSeedFile } from "@ovation/config";
import pg from "pg";
// By path, not as @ovation/events: that package's own tests use this kit, and a package
// dependency would make the workspace graph circular. The file imports only names.ts.
import { Names } from "../../events/src/names.ts";
import type { BusIdentity } from "../../events/src/permissions.ts";
import { type NatsTestCluster, startNatsCluster } from "./nats-cluster.ts";
import { type NatsTestServer, removeStaleNatsServers, startNatsServer } from "./nats-server.ts";
import {
  formationRunDirectory,
  type PostgresFormation,
  removeStaleFormations,
  startPostgresFormation,
} from "./pg-formation.ts";
import { freePorts } from "./processes.ts";
import { testServers } from "./servers.ts";

export type { NatsClusterNode, NatsTestCluster } from "./nats-cluster.ts";
export type { FormationNode, PostgresFormation } from "./pg-formation.ts";
export { testServers };

const staleAfterMs = 3600_000;
/** Streams of a test run are small; JetStream reserves their byte limit on disk. */
export const testStreamMaxBytes = 16 * 1024 * 1024;
const namePattern = /^t([0-9a-z]{8})([0-9a-f]{6})$/;

function newRunName(): string {
  return `t${Date.now().toString(36).padStart(8, "0")}${randomBytes(3).toString("hex")}`;
}

function isStale(name: string): boolean {
  const match = namePattern.exec(name.toLowerCase());
  return match !== null && Date.now() - Number.parseInt(match[1]!, 36) > staleAfterMs;
}

/** What EventBus.connect needs besides url, prefix and name, to connect as an identity. */
export interface NatsCredentials<Identity extends BusIdentity = BusIdentity> {
  identity: Identity;
  nkeySeed: Uint8Array;
}

export interface TestEnvironment {
  /** Lower-case run name, also the stream/subject prefix. */
  prefix: string;
  databaseUrl: string;
  /** This environment's own nats-server, secured like a deployment (every node's, comma separated, for a cluster). */
  natsUrl: string;
  /** The process id of that nats-server (a cluster's first node), for benchmarks that meter its CPU. */
  natsPid: number;
  /** The JetStream cluster, when the environment asked for one (`natsCluster`): to kill and restart nodes. */
  natsCluster: NatsTestCluster | undefined;
  /**
   * The Postgres formation, when the environment asked for one (`postgresFormation`): to kill
   * the primary. `databaseUrl` then names its nodes.
   */
  postgresFormation: PostgresFormation | undefined;
  /** Connect as `ops` (full access): `EventBus.connect({ url, prefix, name, ...env.natsOps })`. */
  natsOps: NatsCredentials<"ops">;
  /** Connect as `identity`, with its permissions: for tests of what an identity may do. */
  natsCredentials<Identity extends BusIdentity>(identity: Identity): NatsCredentials<Identity>;
  /** A plain NATS connection as `identity` (default `ops`) with its inbox prefix; to `url` if given. */
  connectNats(identity?: BusIdentity, url?: string): Promise<NatsConnection>;
  /** This environment's key set: jwks.json, issuer.private.jwk, <service>.private.jwk, nats/. */
  keys: KeySetFiles;
  /**
   * Environment variables for any service under test. OVATION_KEY_DIR lets each service pick
   * its own key (and the gateway the issuer key, with dev tokens) from `keys`.
   */
  env: Record<string, string>;
  /** A user token (user, host, admin) signed with the issuer key; refuses the service role. */
  token(subject: string, roles: Role[], vipLevel?: number): Promise<string>;
  /** A service token of `name`, signed with that service's own key. */
  serviceToken(name: string): Promise<string>;
  [Symbol.asyncDispose](): Promise<void>;
}

const servicesDirectory = path.resolve(import.meta.dirname, "../../../services");
const keyDirectoryPrefix = "ovation-keys-";
const tokenSettings = { issuer: "ovation", audience: "ovation" };

/** The services `./ov up` starts: those whose package.json has an "ovation" field. */
export function serviceNames(): string[] {
  return readdirSync(servicesDirectory).filter((name) => {
    try {
      const manifest = JSON.parse(readFileSync(path.join(servicesDirectory, name, "package.json"), "utf8"));
      return manifest.ovation !== undefined;
    } catch {
      return false;
    }
  });
}

async function createKeys(name: string, extraServices: readonly string[]): Promise<KeySetFiles> {
  await removeStaleKeyDirectories();
  const services = [...new Set([...serviceNames(), ...extraServices])];
  const { files } = await ensureKeySet(path.join(tmpdir(), `${keyDirectoryPrefix}${name}`), services);
  return files;
}

async function removeStaleKeyDirectories(): Promise<void> {
  for (const entry of await readdir(tmpdir())) {
    if (entry.startsWith(keyDirectoryPrefix) && isStale(entry.slice(keyDirectoryPrefix.length))) {
      await rm(path.join(tmpdir(), entry), { recursive: true, force: true });
    }
  }
}

export interface TestEnvironmentOptions {
  /**
   * Service identities to make keys for besides the services in the repository, for tests
   * that call as a service that does not exist yet (a policy written ahead of its service).
   */
  extraServices?: readonly string[];
  /**
   * A JetStream cluster of this many nodes instead of one server; services get
   * NATS_REPLICAS of the same number (decision 0042).
   */
  natsCluster?: number;
  /**
   * A Postgres that fails over (a pg_auto_failover monitor, a primary and a standby of this
   * run's own; decision 0046) instead of a database on the shared server.
   */
  postgresFormation?: boolean;
}

/** A database and a stream prefix of its own; `await using env = await testEnvironment()`. */
export async function testEnvironment(options: TestEnvironmentOptions = {}): Promise<TestEnvironment> {
  const name = newRunName();
  const admin = new pg.Client({ connectionString: testServers.postgresUrl });
  await admin.connect();
  try {
    await dropStaleDatabases(admin);
    if (options.postgresFormation !== true) await admin.query(`create database ovation_${name}`);
  } finally {
    await admin.end();
  }
  await removeStaleFormations(isStale);
  const formationPorts = options.postgresFormation === true ? await freePorts(3) : [];
  const formation =
    options.postgresFormation === true
      ? await startPostgresFormation({
          directory: formationRunDirectory(name),
          monitorPort: formationPorts[0]!,
          nodePorts: formationPorts.slice(1),
          database: "ovation",
        }).catch(async (error: unknown) => {
          await rm(formationRunDirectory(name), { recursive: true, force: true });
          throw error;
        })
      : undefined;
  const dropData = async () => {
    if (formation === undefined) return dropDatabase(`ovation_${name}`);
    await formation.stop();
    await rm(formationRunDirectory(name), { recursive: true, force: true });
  };
  const sharedUrl = new URL(testServers.postgresUrl);
  sharedUrl.pathname = `/ovation_${name}`;
  const url = formation?.url ?? sharedUrl.toString();
  const keys = await createKeys(name, options.extraServices ?? []);
  await removeStaleNatsServers(isStale);
  const clusterSize = options.natsCluster;
  const start = async (): Promise<{ server: NatsTestServer; cluster: NatsTestCluster | undefined }> => {
    if (clusterSize === undefined)
      return { server: await startNatsServer(name, keys.directory), cluster: undefined };
    const cluster = await startNatsCluster(
      name,
      keys.directory,
      readNatsSeedFile(keys.natsSeed("ops")),
      clusterSize,
    );
    return { server: { url: cluster.url, pid: cluster.nodes[0]!.pid, stop: cluster.stop }, cluster };
  };
  const { server: nats, cluster } = await start().catch(async (error: unknown) => {
    await dropData();
    await rm(keys.directory, { recursive: true, force: true });
    throw error;
  });
  const credentials = <Identity extends BusIdentity>(identity: Identity): NatsCredentials<Identity> => ({
    identity,
    nkeySeed: readNatsSeedFile(keys.natsSeed(identity)),
  });
  const names = new Names(name);
  const sign = createUserTokenSigner(await readSigningKey(keys.issuer), tokenSettings);
  const serviceKeys = new Map<string, Promise<SigningKey>>();
  const serviceKey = (service: string) => {
    let key = serviceKeys.get(service);
    if (key === undefined) {
      key = readSigningKey(keys.service(service));
      serviceKeys.set(service, key);
    }
    return key;
  };
  return {
    prefix: name,
    databaseUrl: url,
    natsUrl: nats.url,
    natsPid: nats.pid,
    natsCluster: cluster,
    postgresFormation: formation,
    natsOps: credentials("ops"),
    natsCredentials: credentials,
    connectNats: (identity = "ops", server = nats.url) =>
      connect({
        servers: natsServerList(server),
        name: `test-${identity}`,
        authenticator: nkeyAuthenticator(credentials(identity).nkeySeed),
        inboxPrefix: names.inboxPrefix(identity),
      }),
    keys,
    env: {
      DATABASE_URL: url,
      NATS_URL: nats.url,
      OVATION_PREFIX: name,
      NATS_STREAM_MAX_BYTES: String(testStreamMaxBytes),
      NATS_REPLICAS: String(clusterSize ?? 1),
      OVATION_KEY_DIR: keys.directory,
      LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? "silent",
      // Two test files run at once, each with a few services: small pools keep a whole run
      // well inside Postgres' default 100 connections.
      DATABASE_POOL_MAX: "6",
    },
    token: (subject, roles, vipLevel = 0) => sign({ subject, roles, vipLevel }),
    serviceToken: async (service) =>
      signServiceToken(service, await serviceKey(service), tokenSettings.audience),
    async [Symbol.asyncDispose]() {
      await nats.stop();
      await dropData();
      await rm(keys.directory, { recursive: true, force: true });
    },
  };
}

async function dropStaleDatabases(admin: pg.Client): Promise<void> {
  const { rows } = await admin.query<{ datname: string }>(
    "select datname from pg_database where datname like 'ovation\\_t%'",
  );
  for (const { datname } of rows) {
    if (isStale(datname.slice("ovation_".length))) {
      await admin.query(`drop database if exists ${datname} with (force)`).catch(() => {});
    }
  }
}

async function dropDatabase(name: string): Promise<void> {
  const admin = new pg.Client({ connectionString: testServers.postgresUrl });
  await admin.connect();
  try {
    await admin.query(`drop database if exists ${name} with (force)`);
  } finally {
    await admin.end();
  }
}

/** Polls `probe` until it returns a value other than undefined/false, or fails after timeoutMs. */
export async function waitFor<T>(
  probe: () => Promise<T | undefined | false> | T | undefined | false,
  { timeoutMs = 10_000, intervalMs = 25, what = "condition" } = {},
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

export { type FaultMode, FaultProxy } from "./fault-proxy.ts";
export { type ChannelListener, listenToChannel } from "./notifications.ts";

/** The Connect code name a call ends with ("InvalidArgument", …), or "ok": for asserting refusals. */
export async function codeOf(call: Promise<unknown>): Promise<string> {
  try {
    await call;
    return "ok";
  } catch (error) {
    return Code[ConnectError.from(error).code];
  }
}
