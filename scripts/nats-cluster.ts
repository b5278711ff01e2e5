// `./ov up --cluster`: a JetStream cluster of three nats-servers from PATH on loopback, routed to
// each other, each with its own store under .data/nats-cluster/<node>, secured with the same
// users and permissions as the single server `up` starts (rendered from packages/events/src/
// permissions.ts and the public nkeys of .data/keys). Services get every node in NATS_URL and
// NATS_REPLICAS=3, so every stream and durable consumer has a copy on each node (decision 0042).
// This module plans and renders; up.ts starts and stops the processes.
import { randomBytes } from "node:crypto";
import { mkdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { setTimeout as delay } from "node:timers/promises";
import { jetstreamManager } from "@nats-io/jetstream";
import { nkeyAuthenticator } from "@nats-io/nats-core";
import { connect } from "@nats-io/transport-node";
import { natsServerList } from "@ovation/config";
import { renderNatsServerConfig } from "@ovation/events";

export const clusterDirectory = ".data/nats-cluster";
/** As many replicas as nodes: every node holds every stream, and one may be lost. */
export const clusterReplicas = 3;
const clusterName = "ovation";
/**
 * Fixed ports, so a restarted `up --cluster` finds its nodes where it left them: clients on
 * 4250-4252 (beside the single server's 4222), routes on 6250-6252. Both far below the
 * kernel's ephemeral range, where the tests' own servers take their ports.
 */
const clientPortBase = 4250;
const routePortBase = 6250;
const jetStreamProbeIntervalMs = 250;
const jetStreamProbeTimeoutMs = 2_000;

export interface ClusterNode {
  name: string;
  clientPort: number;
  routePort: number;
  /** Relative to the repository root. */
  configFile: string;
}

export const clusterNodes: readonly ClusterNode[] = Array.from({ length: clusterReplicas }, (_, index) => ({
  name: `n${index + 1}`,
  clientPort: clientPortBase + index,
  routePort: routePortBase + index,
  configFile: path.join(clusterDirectory, `n${index + 1}`, "nats.conf"),
}));

/** NATS_URL of the cluster: every node, so a client that loses one tries the others. */
export const clusterUrl = clusterNodes.map((node) => `nats://127.0.0.1:${node.clientPort}`).join(",");

/**
 * Renders every node's configuration. The routes' password is new on every start: the nodes of
 * one run share it, and a process that is not one of them cannot join the cluster as a route
 * (which would pass every user's permissions). The files hold it, so only their owner reads them.
 */
export async function writeClusterConfigs(
  root: string,
  options: { prefix: string; publicKeys: ReadonlyMap<string, string> },
): Promise<void> {
  const routeCredentials = { user: "route", password: randomBytes(24).toString("hex") };
  for (const node of clusterNodes) {
    const directory = path.join(root, path.dirname(node.configFile));
    await mkdir(path.join(directory, "store"), { recursive: true, mode: 0o700 });
    const config = renderNatsServerConfig({
      prefix: options.prefix,
      publicKeys: options.publicKeys,
      host: "127.0.0.1",
      port: node.clientPort,
      storeDirectory: path.join(directory, "store"),
      cluster: {
        name: clusterName,
        serverName: node.name,
        host: "127.0.0.1",
        port: node.routePort,
        routes: clusterNodes.map((other) => ({ host: "127.0.0.1", port: other.routePort })),
        routeCredentials,
      },
    });
    await writeFile(path.join(root, node.configFile), config, { mode: 0o600 });
  }
}

/**
 * Waits until JetStream answers on the cluster (its nodes elected a metadata leader), so that
 * services creating their streams at start-up do not find it still electing. False on timeout.
 */
export async function waitForJetStream(
  url: string,
  seed: Uint8Array,
  timeoutMs: number,
  signal?: AbortSignal,
): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline && signal?.aborted !== true) {
    const connection = await connect({
      servers: natsServerList(url),
      name: "up",
      authenticator: nkeyAuthenticator(seed),
      timeout: jetStreamProbeTimeoutMs,
      reconnect: false,
    }).catch(() => undefined);
    if (connection !== undefined) {
      try {
        const manager = await jetstreamManager(connection, { timeout: jetStreamProbeTimeoutMs });
        await manager.getAccountInfo();
        return true;
      } catch {
        // Still electing: ask again.
      } finally {
        await connection.close();
      }
    }
    await delay(jetStreamProbeIntervalMs);
  }
  return false;
}
