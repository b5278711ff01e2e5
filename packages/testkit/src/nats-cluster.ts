// A JetStream cluster for tests of what survives losing a node: `size` nats-servers on loopback
// ports, routed to each other with a route password of their own run, each with its own store
// and secured exactly like one test server (the same rendering, the same users). A node can be
// killed, as a machine crashes, and started again on its store, as it comes back.
import { randomBytes } from "node:crypto";
import { mkdir, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { setTimeout as delay } from "node:timers/promises";
import { jetstreamManager } from "@nats-io/jetstream";
import { nkeyAuthenticator } from "@nats-io/nats-core";
import { connect } from "@nats-io/transport-node";
import { readNatsPublicKeys } from "@ovation/auth";
// By path: see index.ts.
import { busIdentities, renderNatsServerConfig } from "../../events/src/permissions.ts";
import { type NatsProcess, natsRunDirectory, spawnNatsServer, stopNatsProcess } from "./nats-server.ts";
import { freePorts } from "./processes.ts";

/**
 * A node has joined once JetStream's API answers through it: its routes are up and the cluster
 * has a metadata leader. (Its log line naming the leader is not enough: a node that joined an
 * election already under way was seen to never print one, under load.)
 */
const joinTimeoutMs = 45_000;
const joinPollMs = 200;
const clusterName = "ovation-test";

export interface NatsClusterNode {
  /** The node's server name, as JetStream names stream and consumer leaders ("n1"). */
  readonly name: string;
  readonly url: string;
  /** The route port, where the other nodes reach it. */
  readonly routePort: number;
  /** Its current process id (a restart changes it). */
  readonly pid: number;
  readonly running: boolean;
}

export interface NatsTestCluster {
  /** Every node's client URL, comma separated: what NATS_URL takes. */
  url: string;
  nodes: readonly NatsClusterNode[];
  /** The node JetStream calls `serverName`; throws for a name that is not one of them. */
  node(serverName: string): NatsClusterNode;
  /** Kills a node (SIGKILL unless told: a crash) and waits until it has exited. */
  kill(serverName: string, signal?: NodeJS.Signals): Promise<void>;
  /** Starts a killed node again on its store; resolves once it has rejoined the cluster. */
  restart(serverName: string): Promise<void>;
  /**
   * Resolves once the cluster has recovered from a loss: JetStream answers through every running
   * node, and every stream has a leader with all of its replicas current. A node that has
   * rejoined may still be catching up, and until it has, API calls can go unanswered.
   */
  settled(): Promise<void>;
  /** Stops every node and removes their stores. */
  stop(): Promise<void>;
}

interface Node {
  name: string;
  directory: string;
  port: number;
  routePort: number;
  process: NatsProcess | undefined;
}

/** Starts a cluster of `size` nodes for run `name` with the users of the key set in `keyDirectory`. */
export async function startNatsCluster(
  name: string,
  keyDirectory: string,
  opsSeed: Uint8Array,
  size = 3,
): Promise<NatsTestCluster> {
  const directory = natsRunDirectory(name);
  const ports = await freePorts(size * 2);
  const nodes: Node[] = Array.from({ length: size }, (_, index) => ({
    name: `n${index + 1}`,
    directory: path.join(directory, `n${index + 1}`),
    port: ports[index]!,
    routePort: ports[size + index]!,
    process: undefined,
  }));
  const routeCredentials = { user: "route", password: randomBytes(24).toString("hex") };
  const publicKeys = readNatsPublicKeys(keyDirectory, busIdentities);
  for (const node of nodes) {
    await mkdir(node.directory, { recursive: true, mode: 0o700 });
    const config = renderNatsServerConfig({
      prefix: name,
      publicKeys,
      host: "127.0.0.1",
      port: node.port,
      storeDirectory: path.join(node.directory, "store"),
      cluster: {
        name: clusterName,
        serverName: node.name,
        host: "127.0.0.1",
        port: node.routePort,
        routes: nodes.map((other) => ({ host: "127.0.0.1", port: other.routePort })),
        routeCredentials,
      },
    });
    // It holds the routes' password.
    await writeFile(path.join(node.directory, "nats.conf"), config, { mode: 0o600 });
  }
  const spawn = (node: Node) => {
    node.process = spawnNatsServer(
      path.join(node.directory, "nats.conf"),
      path.join(node.directory, "nats.pid"),
    );
    return node.process.ready;
  };
  const joined = (node: Node) => jetStreamAnswers(`nats://127.0.0.1:${node.port}`, opsSeed);
  const start = async (node: Node) => {
    await spawn(node);
    await joined(node);
  };
  const stop = async () => {
    await Promise.all(
      nodes.map((node) => (node.process === undefined ? undefined : stopNatsProcess(node.process))),
    );
    await rm(directory, { recursive: true, force: true });
  };
  try {
    // Together: no node learns a metadata leader before a majority of them runs.
    await Promise.all(nodes.map(spawn));
    await Promise.all(nodes.map(joined));
  } catch (error) {
    await stop();
    throw error;
  }
  const find = (serverName: string): Node => {
    const node = nodes.find((candidate) => candidate.name === serverName);
    if (node === undefined) throw new Error(`no node ${serverName} in this cluster`);
    return node;
  };
  const view = (node: Node): NatsClusterNode => ({
    name: node.name,
    url: `nats://127.0.0.1:${node.port}`,
    routePort: node.routePort,
    get pid() {
      return node.process?.child.pid ?? 0;
    },
    get running() {
      const child = node.process?.child;
      return child !== undefined && child.exitCode === null && child.signalCode === null;
    },
  });
  const views = nodes.map(view);
  return {
    url: views.map((node) => node.url).join(","),
    nodes: views,
    node: (serverName) => views[nodes.indexOf(find(serverName))]!,
    async kill(serverName, signal = "SIGKILL") {
      const node = find(serverName);
      if (node.process === undefined) return;
      node.process.child.kill(signal);
      await node.process.exited;
    },
    async restart(serverName) {
      const node = find(serverName);
      if (views[nodes.indexOf(node)]!.running) throw new Error(`node ${serverName} is running`);
      await start(node);
    },
    async settled() {
      const running = nodes.filter((node) => views[nodes.indexOf(node)]!.running);
      await Promise.all(running.map(joined));
      await streamsCurrent(`nats://127.0.0.1:${running[0]!.port}`, opsSeed);
    },
    stop,
  };
}

/** Waits until every stream has a leader and all of its replicas are current. */
async function streamsCurrent(url: string, opsSeed: Uint8Array): Promise<void> {
  const connection = await connect({
    servers: url,
    authenticator: nkeyAuthenticator(opsSeed),
    timeout: 2_000,
  });
  try {
    const deadline = Date.now() + joinTimeoutMs;
    let lagging: string[] = [];
    while (Date.now() < deadline) {
      try {
        const jsm = await jetstreamManager(connection, { timeout: 2_000 });
        lagging = [];
        for await (const stream of jsm.streams.list()) {
          const cluster = stream.cluster;
          const current =
            cluster?.leader !== undefined && (cluster.replicas ?? []).every((peer) => peer.current);
          if (!current) lagging.push(stream.config.name);
        }
        if (lagging.length === 0) return;
      } catch (error) {
        lagging = [String(error)];
      }
      await delay(joinPollMs);
    }
    throw new Error(`the cluster did not settle within ${joinTimeoutMs} ms: ${lagging.join(", ")}`);
  } finally {
    await connection.close();
  }
}

/** Waits until JetStream's API answers a client of the node at `url` (as the ops identity). */
async function jetStreamAnswers(url: string, opsSeed: Uint8Array): Promise<void> {
  const deadline = Date.now() + joinTimeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const connection = await connect({
        servers: url,
        authenticator: nkeyAuthenticator(opsSeed),
        reconnect: false,
        timeout: 2_000,
      });
      try {
        await (await jetstreamManager(connection, { timeout: 2_000 })).getAccountInfo();
        return;
      } finally {
        await connection.close();
      }
    } catch (error) {
      last = error;
    }
    await delay(joinPollMs);
  }
  throw new Error(`nats node ${url} did not serve JetStream within ${joinTimeoutMs} ms: ${String(last)}`);
}
