// One nats-server per test environment: JetStream in a temporary store, a port the server picks
// on loopback, and the configuration a deployment gets (rendered from the permission table and
// the environment's public nkeys), so tests run with the bus permissions in force and never
// share a server's streams, consumers or limits with another run.
import { type ChildProcess, spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { mkdir, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { createInterface } from "node:readline";
import { readNatsPublicKeys } from "@ovation/auth";
// By path: see index.ts.
import { busIdentities, renderNatsServerConfig } from "../../events/src/permissions.ts";

const directoryPrefix = "ovation-nats-";
/** A server takes well under a second to start; this is for a machine busy with other tests. */
const startTimeoutMs = 15_000;
const stopTimeoutMs = 5_000;
const logLinesKept = 40;

export interface NatsTestServer {
  url: string;
  /** The server's process id, for benchmarks that meter its CPU. */
  pid: number;
  /** Stops the server (SIGTERM, then SIGKILL) and removes its store. */
  stop(): Promise<void>;
}

/** Starts nats-server for run `name` with the users of the key set in `keyDirectory`. */
export async function startNatsServer(name: string, keyDirectory: string): Promise<NatsTestServer> {
  const directory = natsRunDirectory(name);
  await mkdir(directory, { recursive: true, mode: 0o700 });
  const configFile = path.join(directory, "nats.conf");
  await writeFile(
    configFile,
    renderNatsServerConfig({
      prefix: name,
      publicKeys: readNatsPublicKeys(keyDirectory, busIdentities),
      host: "127.0.0.1",
      port: -1,
      storeDirectory: path.join(directory, "store"),
    }),
  );
  const server = spawnNatsServer(configFile, path.join(directory, "nats.pid"));
  const stop = async () => {
    await stopNatsProcess(server);
    await rm(directory, { recursive: true, force: true });
  };
  try {
    const port = await server.ready;
    return { url: `nats://127.0.0.1:${port}`, pid: server.child.pid!, stop };
  } catch (error) {
    await stop();
    throw error;
  }
}

/** A nats-server process, and when it is ready (with the client port it listens on). */
export interface NatsProcess {
  child: ChildProcess;
  exited: Promise<void>;
  ready: Promise<number>;
}

/**
 * Starts nats-server with `configFile`; it is ready once it said so and every one of `alsoAwait`
 * matched a line of its log (a cluster node: once it knows the JetStream metadata leader).
 */
export function spawnNatsServer(configFile: string, pidFile: string, alsoAwait: RegExp[] = []): NatsProcess {
  const child = spawn("nats-server", ["-c", configFile, "-P", pidFile], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  const exited = new Promise<void>((resolve) => {
    child.once("exit", () => resolve());
    child.once("error", () => resolve());
  });
  return { child, exited, ready: listeningPort(child, exited, [/Server is ready/, ...alsoAwait]) };
}

/** Reads the server's log until every pattern matched; returns the client port it chose. */
function listeningPort(child: ChildProcess, exited: Promise<void>, awaited: RegExp[]): Promise<number> {
  const lines: string[] = [];
  const pending = new Set(awaited);
  let port: number | undefined;
  return new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => fail(`did not start within ${startTimeoutMs} ms`), startTimeoutMs);
    function fail(why: string) {
      clearTimeout(timer);
      reject(new Error(`nats-server ${why}:\n${lines.join("\n")}`));
    }
    child.once("error", (error) =>
      fail(`could not be started (${error.message}): the tests need nats-server 2.9+ on PATH`),
    );
    void exited.then(() => fail(`exited (${child.exitCode ?? child.signalCode})`));
    // The log keeps being read after start-up, so the pipe never fills and blocks the server.
    createInterface({ input: child.stderr! }).on("line", (line) => {
      if (pending.size === 0) return;
      lines.push(line);
      if (lines.length > logLinesKept) lines.shift();
      const listening = /Listening for client connections on [^\s]+:(\d+)/.exec(line);
      if (listening !== null) port = Number(listening[1]);
      for (const pattern of pending) if (pattern.test(line)) pending.delete(pattern);
      if (pending.size > 0) return;
      clearTimeout(timer);
      if (port === undefined) fail("did not say which port it listens on");
      else resolve(port);
    });
  });
}

/** SIGTERM, then SIGKILL when it has not exited after a while. */
export async function stopNatsProcess({
  child,
  exited,
}: Pick<NatsProcess, "child" | "exited">): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
  child.kill("SIGTERM");
  const timeout = new Promise<boolean>((resolve) => setTimeout(resolve, stopTimeoutMs, false).unref());
  if (!(await Promise.race([exited.then(() => true), timeout]))) {
    child.kill("SIGKILL");
    await exited;
  }
}

/** Where the servers of run `name` keep their configuration, pid files and stores. */
export const natsRunDirectory = (name: string) => path.join(tmpdir(), `${directoryPrefix}${name}`);

/**
 * A test process killed outright leaves its servers running. Servers of runs older than an hour
 * are stopped (one server in the run's directory, or a cluster's nodes in its subdirectories),
 * but only a process whose command line names that server's own configuration file: a recycled
 * pid is never touched.
 */
export async function removeStaleNatsServers(isStale: (name: string) => boolean): Promise<void> {
  for (const entry of await readdir(tmpdir())) {
    if (!entry.startsWith(directoryPrefix) || !isStale(entry.slice(directoryPrefix.length))) continue;
    const directory = path.join(tmpdir(), entry);
    const nodes = await readdir(directory, { withFileTypes: true }).catch(() => []);
    for (const server of [
      directory,
      ...nodes.filter((node) => node.isDirectory()).map((node) => path.join(directory, node.name)),
    ])
      killStaleServer(server);
    await rm(directory, { recursive: true, force: true });
  }
}

function killStaleServer(directory: string): void {
  try {
    const pid = Number(readFileSync(path.join(directory, "nats.pid"), "utf8").trim());
    const commandLine = readFileSync(`/proc/${pid}/cmdline`, "utf8");
    if (commandLine.includes(path.join(directory, "nats.conf"))) process.kill(pid, "SIGKILL");
  } catch {
    // No pid file, or the process is gone: nothing to stop.
  }
}
