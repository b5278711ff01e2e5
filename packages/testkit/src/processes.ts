// Services as child processes, so a load generator does not share their event loop.
import { type ChildProcess, spawn } from "node:child_process";
import net from "node:net";

const serviceStartTimeoutMs = 60_000;
const stderrTailChars = 4_000;

export async function freePort(): Promise<number> {
  const [port] = await freePorts(1);
  return port!;
}

/**
 * Ports are chosen below the kernel's ephemeral range (ip_local_port_range starts at 32768
 * here): a replica or node that is killed and started again on its port must not find it taken
 * by some process's outgoing connection meanwhile, which a port the kernel handed out for
 * `listen(0)` can be (a cluster soak's restarted replica failed with EADDRINUSE).
 */
const portsFrom = 20_000;
const portsTo = 32_000;

/** Binds `port` on 127.0.0.1, or resolves undefined when it is taken. */
function hold(port: number): Promise<net.Server | undefined> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once("error", () => resolve(undefined));
    server.listen(port, "127.0.0.1", () => resolve(server));
  });
}

/**
 * `count` distinct free ports, picked at random below the ephemeral range and held all at once
 * while they are chosen (one at a time, a port just released could be handed out again).
 */
export async function freePorts(count: number): Promise<number[]> {
  const held: net.Server[] = [];
  try {
    for (let attempts = 0; held.length < count; attempts++) {
      if (attempts > count * 100) throw new Error(`no ${count} free ports in ${portsFrom}..${portsTo}`);
      const server = await hold(portsFrom + Math.floor(Math.random() * (portsTo - portsFrom)));
      if (server !== undefined) held.push(server);
    }
    return held.map((server) => (server.address() as net.AddressInfo).port);
  } finally {
    await Promise.all(held.map((server) => new Promise((resolve) => server.close(resolve))));
  }
}

export interface ServiceProcess {
  url: string;
  port: number;
  child: ChildProcess;
  /** SIGTERM drains; SIGKILL is a crash. */
  stop(signal?: NodeJS.Signals): Promise<void>;
  /** `await using service = await startServiceProcess(…)` stops it however the scope ends. */
  [Symbol.asyncDispose](): Promise<void>;
}

async function stopProcess(child: ChildProcess, signal: NodeJS.Signals): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once("exit", resolve));
  child.kill(signal);
  await exited;
}

/** Starts `node <entry>` with `env` and waits until its port accepts connections. */
export async function startServiceProcess(
  entry: string,
  env: Record<string, string>,
  requestedPort?: number,
): Promise<ServiceProcess> {
  const port = requestedPort ?? (await freePort());
  // BENCH_PROFILE_DIR=dir: every service process writes a V8 CPU profile there when it exits.
  const profileDir = process.env.BENCH_PROFILE_DIR;
  const profiling = profileDir ? { NODE_OPTIONS: `--cpu-prof --cpu-prof-dir=${profileDir}` } : {};
  const child = spawn(process.execPath, [entry], {
    env: { ...process.env, ...env, ...profiling, PORT: String(port) },
    stdio: ["ignore", "inherit", "pipe"],
  });
  // Passed through, and its tail kept so that a process that dies while starting says why.
  let stderrTail = "";
  child.stderr?.on("data", (chunk: Buffer) => {
    process.stderr.write(chunk);
    stderrTail = (stderrTail + chunk.toString()).slice(-stderrTailChars);
  });
  const deadline = Date.now() + serviceStartTimeoutMs;
  while (!(await accepts(port))) {
    if (child.exitCode !== null)
      throw new Error(
        `${entry} exited with ${child.exitCode} while starting; its stderr ended:\n${stderrTail}`,
      );
    if (Date.now() > deadline) {
      await stopProcess(child, "SIGKILL");
      throw new Error(`${entry} did not listen within ${serviceStartTimeoutMs} ms`);
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    child,
    stop: (signal: NodeJS.Signals = "SIGTERM") => stopProcess(child, signal),
    [Symbol.asyncDispose]: () => stopProcess(child, "SIGTERM"),
  };
}

function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, "127.0.0.1");
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}
