// A Postgres that fails over, on loopback (decision 0046): a pg_auto_failover formation of a
// monitor and two nodes, Debian's postgresql-15-auto-failover. The first node becomes the
// primary, the second its synchronous standby; when the primary dies the monitor promotes the
// standby, which carries on alone (wait_primary) until a node rejoins. Services reach whichever
// is primary through the formation's multi-host URL with target_session_attrs=read-write
// (packages/db/src/hosts.ts). `./ov up --ha` runs one in .data/pg-ha on fixed ports; tests run
// their own in a temporary directory (testEnvironment({ postgresFormation: true })).
//
// The monitor's timings are set for loopback: a node is checked every second and called
// unhealthy after 2 s without an answer; a primary that lost both the monitor and its standby
// demotes itself after 3 s (its keeper's network_partition_timeout), so the monitor may promote
// the standby 5 s after it lost the primary (primary_demote_timeout) without two primaries.
// pg_autoctl runs as the 'postgres' system user when we are root (Postgres refuses root).
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { chown, mkdir, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { createInterface } from "node:readline";
import { setTimeout as delay } from "node:timers/promises";
import pg from "pg";

export interface FormationNode {
  /** pg_auto_failover's name of the node ("node_1"). */
  readonly name: string;
  readonly port: number;
  readonly dataDirectory: string;
}

export interface PostgresFormationOptions {
  /** Holds every data directory, pg_autoctl's configuration and state; created when missing. */
  directory: string;
  monitorPort: number;
  /** One port per node: the first becomes the primary, the others its standbys. */
  nodePorts: readonly number[];
  /** The application's database, created on the primary. */
  database: string;
  /** pg_autoctl's log lines, labelled with the process ("node_1"); kept for errors otherwise. */
  output?: (label: string, line: string) => void;
}

export interface PostgresFormation {
  /** Every node, with target_session_attrs=read-write: what services connect with. */
  readonly url: string;
  readonly nodes: readonly FormationNode[];
  /** The node the monitor has made primary now (waits while there is none, up to `timeoutMs`). */
  primary(timeoutMs?: number): Promise<FormationNode>;
  /** Waits until a node other than `former` is primary and accepts writes; returns it. */
  promotedAfter(former: FormationNode, timeoutMs?: number): Promise<FormationNode>;
  /** Waits until there is a primary and every other running node is its secondary. */
  healthy(timeoutMs?: number): Promise<void>;
  /** SIGKILL to the node's pg_autoctl and Postgres: the machine died. */
  kill(node: FormationNode): Promise<void>;
  /** Starts a node again and waits until it is a secondary (a former primary rejoins as a standby). */
  start(node: FormationNode, timeoutMs?: number): Promise<void>;
  /** Stops every process (SIGTERM, then SIGKILL); the data stays in `directory`. */
  stop(): Promise<void>;
  /** SIGTERM to every process, without waiting: for a launcher's exit handler. */
  signalStop(): void;
}

const superuser = "postgres";
const monitorDatabase = "pg_auto_failover";
const startTimeoutMs = 90_000;
const stopTimeoutMs = 15_000;
const pollMs = 200;
const logLinesKept = 60;
/** The monitor's GUCs (milliseconds) for nodes on loopback; see the header. */
const monitorSettings = {
  "pgautofailover.health_check_period": 1_000,
  "pgautofailover.health_check_timeout": 1_000,
  "pgautofailover.health_check_max_retries": 1,
  "pgautofailover.health_check_retry_delay": 500,
  "pgautofailover.node_considered_unhealthy_timeout": 2_000,
  "pgautofailover.primary_demote_timeout": 5_000,
};
/** Seconds a primary cut off from the monitor and its standby waits before it demotes itself. */
const networkPartitionTimeoutSeconds = 3;
const primaryStates = new Set(["primary", "wait_primary", "single"]);

interface Running {
  child: ChildProcess;
  exited: Promise<void>;
}

export async function startPostgresFormation(options: PostgresFormationOptions): Promise<PostgresFormation> {
  const tools = findTools();
  const runAs = process.getuid?.() === 0 ? systemUser(superuser) : undefined;
  await mkdir(options.directory, { recursive: true });
  if (runAs !== undefined) await chownTree(options.directory, runAs);
  const env = {
    ...process.env,
    PATH: `${tools.bin}:${process.env.PATH ?? ""}`,
    // pg_autoctl keeps its configuration and state under these: inside the formation's directory.
    HOME: options.directory,
    XDG_CONFIG_HOME: path.join(options.directory, "config"),
    XDG_DATA_HOME: path.join(options.directory, "share"),
    XDG_RUNTIME_DIR: path.join(options.directory, "run"),
    PGHOST: undefined,
    PGPORT: undefined,
    PGDATABASE: undefined,
    PGUSER: undefined,
  };
  const log: string[] = [];
  const output = (label: string, line: string) => {
    options.output?.(label, line);
    log.push(`[${label}] ${line}`);
    if (log.length > logLinesKept) log.shift();
  };
  const failure = (what: string) => new Error(`${what}; pg_autoctl said:\n${log.join("\n")}`);
  const spawnAutoctl = (label: string, args: string[]): Running => {
    const child = spawn(tools.autoctl, args, {
      cwd: options.directory,
      env,
      stdio: ["ignore", "pipe", "pipe"],
      // Its own process group: killing the node kills its keeper and the services it runs.
      detached: true,
      ...runAs,
    });
    for (const stream of [child.stdout, child.stderr])
      createInterface({ input: stream! }).on("line", (line) => output(label, line));
    const exited = new Promise<void>((resolve) => {
      child.once("exit", () => resolve());
      child.once("error", (error) => {
        output(label, `could not run ${tools.autoctl}: ${error.message}`);
        resolve();
      });
    });
    return { child, exited };
  };
  const runToEnd = async (label: string, args: string[]) => {
    const { child, exited } = spawnAutoctl(label, args);
    await exited;
    if (child.exitCode !== 0)
      throw failure(`pg_autoctl ${args.slice(0, 2).join(" ")} failed (${child.exitCode})`);
  };

  const monitorDirectory = path.join(options.directory, "monitor");
  const monitorUrl = `postgres://${superuser}@127.0.0.1:${options.monitorPort}/${monitorDatabase}`;
  const nodes: FormationNode[] = options.nodePorts.map((port, index) => ({
    name: `node_${index + 1}`,
    port,
    dataDirectory: path.join(options.directory, `node_${index + 1}`),
  }));
  const running = new Map<string, Running>();
  const url = `postgres://${superuser}@${nodes.map((node) => `127.0.0.1:${node.port}`).join(",")}/${options.database}?target_session_attrs=read-write`;

  const monitorQuery = async <Row extends pg.QueryResultRow>(sql: string): Promise<Row[]> => {
    const client = new pg.Client({
      connectionString: monitorUrl,
      connectionTimeoutMillis: 2_000,
      query_timeout: 5_000,
    });
    client.on("error", () => {});
    try {
      await client.connect();
      return (await client.query<Row>(sql)).rows;
    } finally {
      await client.end().catch(() => {});
    }
  };
  const states = () =>
    monitorQuery<{ name: string; reported: string; goal: string }>(
      "select nodename as name, reportedstate::text as reported, goalstate::text as goal from pgautofailover.node",
    ).catch(() => []);
  const until = async <T>(what: string, timeoutMs: number, probe: () => Promise<T | undefined>) => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const value = await probe();
      if (value !== undefined) return value;
      if (Date.now() > deadline) throw failure(`${what} within ${timeoutMs / 1000} s`);
      await delay(pollMs);
    }
  };
  const primaryNow = async () => {
    const primary = (await states()).find(
      (state) => primaryStates.has(state.reported) && state.goal === state.reported,
    );
    return nodes.find((node) => node.name === primary?.name);
  };
  const acceptsWrites = async (node: FormationNode) => {
    const client = new pg.Client({
      host: "127.0.0.1",
      port: node.port,
      user: superuser,
      database: options.database,
      connectionTimeoutMillis: 2_000,
      query_timeout: 2_000,
    });
    client.on("error", () => {});
    try {
      await client.connect();
      const { rows } = await client.query<{ writable: boolean }>(
        "select not pg_is_in_recovery() and current_setting('transaction_read_only') = 'off' as writable",
      );
      return rows[0]?.writable === true;
    } catch {
      return false;
    } finally {
      await client.end().catch(() => {});
    }
  };
  const run = (label: string, dataDirectory: string) => {
    running.set(label, spawnAutoctl(label, ["run", "--pgdata", dataDirectory]));
  };
  const stop = async () => {
    await Promise.all(
      [...running.values()].map(async ({ child, exited }) => {
        if (child.exitCode !== null || child.signalCode !== null) return;
        signalGroup(child, "SIGTERM");
        const stopped = await Promise.race([exited.then(() => true), delay(stopTimeoutMs, false)]);
        if (!stopped) signalGroup(child, "SIGKILL");
        await exited;
      }),
    );
    running.clear();
    // A Postgres whose keeper was killed outright is still running: stop it too.
    for (const directory of [monitorDirectory, ...nodes.map((node) => node.dataDirectory)])
      killPostmaster(directory);
  };

  try {
    // The monitor: created once, then run; its timings set on every start.
    if (!existsSync(path.join(monitorDirectory, "PG_VERSION")))
      await runToEnd("monitor", [
        "create",
        "monitor",
        "--pgdata",
        monitorDirectory,
        "--pgctl",
        tools.pgCtl,
        "--pgport",
        String(options.monitorPort),
        "--hostname",
        "127.0.0.1",
        "--auth",
        "trust",
        "--no-ssl",
      ]);
    run("monitor", monitorDirectory);
    await until("the monitor did not answer", startTimeoutMs, async () =>
      (await monitorQuery("select 1").catch(() => undefined)) === undefined ? undefined : true,
    );
    // One statement each: several in one query run as one transaction, which ALTER SYSTEM refuses.
    for (const [name, value] of Object.entries(monitorSettings))
      await monitorQuery(`alter system set ${name} = ${value}`);
    await monitorQuery("select pg_reload_conf()");

    // The nodes, one after the other: the first registered becomes the primary.
    for (const node of nodes) {
      if (!existsSync(path.join(node.dataDirectory, "PG_VERSION"))) {
        // A standby's base backup waits for a checkpoint of the primary: ask for them meanwhile.
        const primary = await primaryNow();
        const checkpoints = primary === undefined ? undefined : checkpointUntil(primary, options.database);
        try {
          await runToEnd(node.name, [
            "create",
            "postgres",
            "--pgdata",
            node.dataDirectory,
            "--pgctl",
            tools.pgCtl,
            "--pgport",
            String(node.port),
            "--hostname",
            "127.0.0.1",
            "--listen",
            "127.0.0.1",
            "--name",
            node.name,
            "--dbname",
            options.database,
            "--monitor",
            `postgres://autoctl_node@127.0.0.1:${options.monitorPort}/${monitorDatabase}?sslmode=disable`,
            "--auth",
            "trust",
            "--no-ssl",
          ]);
        } finally {
          await checkpoints?.stop();
        }
        await runToEnd(node.name, [
          "config",
          "set",
          "--pgdata",
          node.dataDirectory,
          "timeout.network_partition_timeout",
          String(networkPartitionTimeoutSeconds),
        ]);
      }
      run(node.name, node.dataDirectory);
      if (node === nodes[0]) await until("no node became primary", startTimeoutMs, primaryNow);
    }
    const healthy = async (timeoutMs = startTimeoutMs) => {
      await until("the formation did not become healthy", timeoutMs, async () => {
        const all = await states();
        const live = all.filter((state) => {
          const child = running.get(state.name)?.child;
          return child !== undefined && child.exitCode === null && child.signalCode === null;
        });
        const settled = live.every((state) => state.goal === state.reported);
        const primaries = live.filter((state) => primaryStates.has(state.reported));
        const secondaries = live.filter((state) => state.reported === "secondary");
        return settled && primaries.length === 1 && primaries.length + secondaries.length === live.length
          ? true
          : undefined;
      });
    };
    await healthy();
    return {
      url,
      nodes,
      primary: (timeoutMs = startTimeoutMs) => until("no primary", timeoutMs, primaryNow),
      promotedAfter: (former, timeoutMs = startTimeoutMs) =>
        until(`no node was promoted after ${former.name}`, timeoutMs, async () => {
          const primary = await primaryNow();
          return primary !== undefined && primary !== former && (await acceptsWrites(primary))
            ? primary
            : undefined;
        }),
      healthy,
      async kill(node) {
        // Postgres first, while its postmaster is alive to name its children: every backend
        // calls setsid(), so killing the keeper's group takes the postmaster but leaves its
        // backends and walsender running, free to commit one more write with the standby's
        // acknowledgement. Then the keeper, in the same turn, before it can restart Postgres.
        killPostmaster(node.dataDirectory);
        const keeper = running.get(node.name);
        if (keeper !== undefined) {
          signalGroup(keeper.child, "SIGKILL");
          await keeper.exited;
        }
      },
      async start(node, timeoutMs = startTimeoutMs) {
        const keeper = running.get(node.name);
        if (keeper !== undefined && keeper.child.exitCode === null && keeper.child.signalCode === null)
          throw new Error(`${node.name} is running`);
        // Rejoining takes a base backup or pg_rewind from the primary: both wait for a checkpoint.
        const primary = await primaryNow();
        const checkpoints = primary === undefined ? undefined : checkpointUntil(primary, options.database);
        try {
          run(node.name, node.dataDirectory);
          await until(`${node.name} did not rejoin as a secondary`, timeoutMs, async () => {
            const state = (await states()).find((candidate) => candidate.name === node.name);
            return state?.reported === "secondary" && state.goal === "secondary" ? true : undefined;
          });
        } finally {
          await checkpoints?.stop();
        }
      },
      stop,
      signalStop() {
        for (const { child } of running.values()) signalGroup(child, "SIGTERM");
      },
    };
  } catch (error) {
    await stop();
    throw error;
  }
}

/** pg_autoctl and the pg_ctl of the Postgres version its extension was built for. */
function findTools(): { autoctl: string; pgCtl: string; bin: string } {
  const autoctl = (process.env.PATH ?? "")
    .split(":")
    .map((directory) => path.join(directory, "pg_autoctl"))
    .find((candidate) => existsSync(candidate));
  const version = existsSync("/usr/share/postgresql")
    ? readdirSync("/usr/share/postgresql")
        .filter((entry) => existsSync(`/usr/share/postgresql/${entry}/extension/pgautofailover.control`))
        .sort((a, b) => Number(b) - Number(a))[0]
    : undefined;
  if (autoctl === undefined || version === undefined)
    throw new Error(
      "a Postgres that fails over needs pg_auto_failover: install Debian's postgresql-15-auto-failover (pg_autoctl)",
    );
  const bin = `/usr/lib/postgresql/${version}/bin`;
  return { autoctl, pgCtl: path.join(bin, "pg_ctl"), bin };
}

/** Issues CHECKPOINT on `node` every second until stopped (a base backup waits for one). */
function checkpointUntil(node: FormationNode, database: string): { stop(): Promise<void> } {
  let running = true;
  const loop = (async () => {
    while (running) {
      const client = new pg.Client({
        host: "127.0.0.1",
        port: node.port,
        user: superuser,
        database,
        connectionTimeoutMillis: 2_000,
        query_timeout: 10_000,
      });
      client.on("error", () => {});
      await client
        .connect()
        .then(() => client.query("checkpoint"))
        .catch(() => {});
      await client.end().catch(() => {});
      await delay(1_000);
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
    },
  };
}

function signalGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  if (child.pid === undefined) return;
  try {
    process.kill(-child.pid, signal);
  } catch {
    // Already gone.
  }
}

/** SIGKILL to the Postgres serving `dataDirectory`, when its pid file names a live postmaster of it. */
/**
 * Kills a node's Postgres the way a crash does: the postmaster and every process it started
 * (backends, walsender, checkpointer), all with SIGKILL. The postmaster alone is not enough: its
 * backends notice its death only at their next wait, so a pooled connection could still run a
 * query, and commit it with the standby's acknowledgement, after the "crash".
 */
function killPostmaster(dataDirectory: string): void {
  let pid: number;
  try {
    pid = Number(readFileSync(path.join(dataDirectory, "postmaster.pid"), "utf8").split("\n")[0]);
    if (!readFileSync(`/proc/${pid}/cmdline`, "utf8").includes(dataDirectory)) return;
  } catch {
    return; // No pid file, or that Postgres is gone.
  }
  // Stopped first, so it starts no process between the listing and the kill (and its children
  // are still its own: once it is dead they belong to init).
  signal(pid, "SIGSTOP");
  for (const victim of [pid, ...childrenOf(pid)]) signal(victim, "SIGKILL");
}

function signal(pid: number, name: NodeJS.Signals): void {
  try {
    process.kill(pid, name);
  } catch {
    // Already gone.
  }
}

/** The processes whose parent is `pid`, from /proc. */
function childrenOf(pid: number): number[] {
  const children: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      // The command name is in parentheses and may hold spaces: the fields after it are fixed.
      const parent = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      if (parent === pid) children.push(Number(entry));
    } catch {
      // Exited meanwhile.
    }
  }
  return children;
}

function systemUser(name: string): { uid: number; gid: number } {
  const id = (flag: string) => Number(execFileSync("id", [flag, name], { encoding: "utf8" }).trim());
  return { uid: id("-u"), gid: id("-g") };
}

async function chownTree(directory: string, owner: { uid: number; gid: number }): Promise<void> {
  await chown(directory, owner.uid, owner.gid);
  for (const entry of await readdir(directory, { withFileTypes: true, recursive: true }))
    await chown(path.join(entry.parentPath, entry.name), owner.uid, owner.gid).catch(() => {});
}

const directoryPrefix = "ovation-pg-";

/** Where the formation of test run `name` lives. */
export const formationRunDirectory = (name: string) => path.join(tmpdir(), `${directoryPrefix}${name}`);

/**
 * A test process killed outright leaves its formation running: those of stale runs are killed
 * (only processes whose command line names the run's directory) and removed.
 */
export async function removeStaleFormations(isStale: (name: string) => boolean): Promise<void> {
  for (const entry of await readdir(tmpdir())) {
    if (!entry.startsWith(directoryPrefix) || !isStale(entry.slice(directoryPrefix.length))) continue;
    const directory = path.join(tmpdir(), entry);
    for (const pid of await readdir("/proc").catch(() => [] as string[])) {
      if (!/^\d+$/.test(pid)) continue;
      try {
        if (readFileSync(`/proc/${pid}/cmdline`, "utf8").includes(directory))
          process.kill(Number(pid), "SIGKILL");
      } catch {
        // Gone meanwhile.
      }
    }
    await rm(directory, { recursive: true, force: true });
  }
}
