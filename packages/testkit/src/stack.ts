// The whole `./ov up` stack for a benchmark or a soak: every service whose package.json declares
// an "ovation" field, each a child process on a free port, every consumer running, each knowing
// the others by their URL variables, on a test environment's database and NATS (one server, or
// every node of its cluster). `root` runs another checkout's services (a baseline) against the
// same kit. With `replicas` above one, every service runs that many times and a balancer fronts
// each service's replicas (balancer.ts), as a Kubernetes Service does: the URL variables name the
// balancers, so a replica that dies is routed around, and `restart` brings it back on its port.
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { type Balancer, startBalancer } from "./balancer.ts";
import type { TestEnvironment } from "./index.ts";
import { freePorts, type ServiceProcess, startServiceProcess } from "./processes.ts";

export interface StackOptions {
  /** The checkout whose services run (default: this one). */
  root?: string;
  /** Settings for every service, over the environment's. */
  env?: Record<string, string>;
  /** Processes of every service (default 1); above one, each service is reached through a balancer. */
  replicas?: number;
  /** Settings of one service's processes, over `env` (each its own DATABASE_URL through a pooler). */
  serviceEnv?: (service: string) => Record<string, string>;
}

export interface Stack {
  /**
   * Every process by its label, as `./ov up` names them: the service's name (the directory
   * under services/), numbered from 1 when there are several replicas ("gift-2").
   */
  services: Map<string, ServiceProcess>;
  /** Replica `replica` (0-based) of service `name`; throws when the stack has none. */
  service(name: string, replica?: number): ServiceProcess;
  /** Where clients reach service `name`: its balancer, or its one process. */
  url(name: string): string;
  /** How many processes each service has. */
  readonly replicas: number;
  /** Starts a replica that was stopped (or killed) again on its port with its settings. */
  restart(name: string, replica: number): Promise<ServiceProcess>;
  [Symbol.asyncDispose](): Promise<void>;
}

interface Declared {
  name: string;
  urlEnv: string;
}

interface Replica {
  service: Declared;
  index: number;
  label: string;
  port: number;
  process: ServiceProcess | undefined;
}

const thisRoot = path.resolve(import.meta.dirname, "../../..");
const stackReplicasMax = 8;

function declaredServices(root: string): Declared[] {
  const directory = path.join(root, "services");
  return readdirSync(directory)
    .sort()
    .flatMap((name) => {
      const manifest = JSON.parse(readFileSync(path.join(directory, name, "package.json"), "utf8"));
      return manifest.ovation === undefined ? [] : [{ name, urlEnv: String(manifest.ovation.urlEnv) }];
    });
}

export async function startStack(env: TestEnvironment, options: StackOptions = {}): Promise<Stack> {
  const root = options.root ?? thisRoot;
  const count = options.replicas ?? 1;
  if (!Number.isInteger(count) || count < 1 || count > stackReplicasMax)
    throw new Error(`replicas must be a whole number from 1 to ${stackReplicasMax}, not ${count}`);
  const declared = declaredServices(root);
  const replicas: Replica[] = [];
  const ports = await freePorts(count * declared.length);
  for (let index = 0; index < count; index++)
    for (const service of declared)
      replicas.push({
        service,
        index,
        label: count === 1 ? service.name : `${service.name}-${index + 1}`,
        port: ports[replicas.length]!,
        process: undefined,
      });
  const balancers = new Map<string, Balancer>();
  const stopAll = async () => {
    await Promise.all(replicas.map((replica) => replica.process?.stop()));
    await Promise.all([...balancers.values()].map((balancer) => balancer.close()));
  };
  const find = (name: string, index: number): Replica => {
    const replica = replicas.find((r) => r.service.name === name && r.index === index);
    if (replica === undefined) throw new Error(`the stack has no replica ${index} of service ${name}`);
    return replica;
  };
  const urls: Record<string, string> = {};
  let settings: Record<string, string> = {};
  const launch = async (replica: Replica) => {
    const entry = path.join(root, "services", replica.service.name, "src", "main.ts");
    const own = options.serviceEnv?.(replica.service.name) ?? {};
    replica.process = await startServiceProcess(entry, { ...settings, ...own }, replica.port);
    return replica.process;
  };
  try {
    for (const service of declared) {
      const ports = replicas.filter((r) => r.service === service).map((r) => r.port);
      if (count > 1) balancers.set(service.name, await startBalancer(ports));
      urls[service.urlEnv] = balancers.get(service.name)?.url ?? `http://127.0.0.1:${ports[0]}`;
    }
    settings = { ...env.env, ...urls, ...options.env };
    // One replica of every service at a time: the first set migrates the schemas and creates the
    // streams and consumers (on a fresh cluster JetStream places them one Raft group after
    // another), and the later sets start on what it made.
    for (let index = 0; index < count; index++)
      await startTogether(replicas.filter((r) => r.index === index));
  } catch (error) {
    await stopAll();
    throw error;
  }
  const services = new Map<string, ServiceProcess>(replicas.map((r) => [r.label, r.process!]));
  return {
    services,
    service(name, replica = 0) {
      const found = find(name, replica).process;
      if (found === undefined) throw new Error(`replica ${replica} of ${name} is not running`);
      return found;
    },
    url(name) {
      const balancer = balancers.get(name);
      return balancer?.url ?? find(name, 0).process!.url;
    },
    replicas: count,
    async restart(name, index) {
      const replica = find(name, index);
      const { child } = replica.process!;
      if (child.exitCode === null && child.signalCode === null)
        throw new Error(`${replica.label} is running`);
      const restarted = await launch(replica);
      services.set(replica.label, restarted);
      return restarted;
    },
    [Symbol.asyncDispose]: stopAll,
  };

  /** Starts `set` at once; when one fails, the others are stopped too and the failure thrown. */
  async function startTogether(set: Replica[]): Promise<void> {
    const started = await Promise.allSettled(set.map(launch));
    const failure = started.find((result) => result.status === "rejected");
    if (failure !== undefined) throw failure.reason;
  }
}

/**
 * Gateway settings for one load generator on one address: the per-address and per-user flood
 * guards would throttle it, and it opens sockets a hundred at a time.
 */
export const unthrottledGateway: Record<string, string> = {
  RATE_LIMIT_IP_WRITES: "1000000",
  RATE_LIMIT_USER_WRITES: "1000000",
  RATE_LIMIT_IP_READS: "10000000",
  RATE_LIMIT_USER_READS: "10000000",
  WS_UNAUTHENTICATED_PER_ADDRESS_MAX: "1000",
};

export interface GiftGateway {
  wallet: ServiceProcess;
  gift: ServiceProcess;
  gateway: ServiceProcess;
  [Symbol.asyncDispose](): Promise<void>;
}

/**
 * The gift path alone: a wallet, a gift service and an unthrottled gateway in front of them,
 * each a child process, with `gatewayEnv` over the gateway's settings.
 */
export async function startGiftGateway(
  env: TestEnvironment,
  gatewayEnv: Record<string, string> = {},
): Promise<GiftGateway> {
  const entry = (name: string) => path.join(thisRoot, "services", name, "src", "main.ts");
  const quiet = { ...env.env, LOG_LEVEL: process.env.BENCH_LOG_LEVEL ?? "warn" };
  const wallet = await startServiceProcess(entry("wallet"), quiet);
  const gift = await startServiceProcess(entry("gift"), { ...quiet, WALLET_URL: wallet.url }).catch(
    async (error: unknown) => {
      await wallet.stop();
      throw error;
    },
  );
  const gateway = await startServiceProcess(entry("gateway"), {
    ...quiet,
    WALLET_URL: wallet.url,
    GIFT_URL: gift.url,
    ...unthrottledGateway,
    ...gatewayEnv,
  }).catch(async (error: unknown) => {
    await Promise.all([gift.stop(), wallet.stop()]);
    throw error;
  });
  return {
    wallet,
    gift,
    gateway,
    [Symbol.asyncDispose]: async () => {
      await gateway.stop();
      await Promise.all([gift.stop(), wallet.stop()]);
    },
  };
}
