// The whole `./ov up` stack for a benchmark: every service whose package.json declares an
// "ovation" field, each a child process on a free port, every consumer running, each knowing
// the others by their URL variables, on a test environment's database and nats-server. `root`
// runs another checkout's services (a baseline) against the same kit.
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import type { TestEnvironment } from "./index.ts";
import { freePort, type ServiceProcess, startServiceProcess } from "./processes.ts";

export interface StackOptions {
  /** The checkout whose services run (default: this one). */
  root?: string;
  /** Settings for every service, over the environment's. */
  env?: Record<string, string>;
}

export interface Stack {
  /** By service name (the directory under services/). */
  services: Map<string, ServiceProcess>;
  /** The service called `name`; throws when the stack has none. */
  service(name: string): ServiceProcess;
  [Symbol.asyncDispose](): Promise<void>;
}

interface Declared {
  name: string;
  urlEnv: string;
}

const thisRoot = path.resolve(import.meta.dirname, "../../..");

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
  const declared = declaredServices(root);
  const ports = await Promise.all(declared.map(() => freePort()));
  const urls = Object.fromEntries(declared.map((s, i) => [s.urlEnv, `http://127.0.0.1:${ports[i]}`]));
  // Settled one by one, so a service that fails to start leaves none of the others running.
  const started = await Promise.allSettled(
    declared.map((service, i) =>
      startServiceProcess(
        path.join(root, "services", service.name, "src", "main.ts"),
        { ...env.env, ...urls, ...options.env },
        ports[i],
      ),
    ),
  );
  const services = new Map<string, ServiceProcess>();
  started.forEach((result, i) => {
    if (result.status === "fulfilled") services.set(declared[i]!.name, result.value);
  });
  const stop = () => Promise.all([...services.values()].map((service) => service.stop()));
  const failure = started.find((result) => result.status === "rejected");
  if (failure !== undefined) {
    await stop();
    throw failure.reason;
  }
  return {
    services,
    service(name) {
      const service = services.get(name);
      if (service === undefined) throw new Error(`the stack has no service ${name}`);
      return service;
    },
    [Symbol.asyncDispose]: async () => {
      await stop();
    },
  };
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
