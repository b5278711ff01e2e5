// `./ov test` runs the tests through this: `node scripts/test-infra.ts COMMAND [ARGS…]` runs the
// command with what the tests need on this machine, so the README's test command works with
// nothing running. Each test file creates its own database on the Postgres at TEST_DATABASE_URL
// and starts its own nats-server from PATH (packages/testkit, decision 0007): what must exist
// beforehand is that Postgres and the nats-server binary. When nothing answers at
// TEST_DATABASE_URL on a local address, an embedded Postgres is started there the way `./ov up`
// starts one (scripts/infra.ts), with its data kept in .data/test-postgres so later runs skip
// initdb, and stopped when the command ends: also when it fails or Ctrl-C interrupts it. A
// Postgres that answers is used and left alone; one at a remote address is never started.
// Paths are relative to the working directory, which `./ov` sets to the repository root.
import { type ChildProcess, spawn } from "node:child_process";
import { createWriteStream } from "node:fs";
import { mkdir } from "node:fs/promises";
import { constants } from "node:os";
import path from "node:path";
import { redactUrl } from "@ovation/config";
import { testServers } from "@ovation/testkit/servers";
import {
  createLog,
  type EmbeddedPostgresServer,
  ensurePostgres,
  errorMessage,
  natsServerBinary,
} from "./infra.ts";

const log = createLog("test");
const postgresDataDirectory = ".data/test-postgres";
/** Postgres' own log stays out of the test output: a failed start points here. */
const postgresLogFile = ".data/test-postgres.log";
const forwardedSignals = ["SIGINT", "SIGTERM", "SIGHUP"] as const;
const usageExitCode = 2;
/** What a shell reports for a command it could not start. */
const notStartedExitCode = 127;

async function runTests(root: string, [command, ...args]: string[]): Promise<number> {
  if (command === undefined) {
    log.error("usage: node scripts/test-infra.ts COMMAND [ARGS…]");
    return usageExitCode;
  }
  let postgres: EmbeddedPostgresServer | undefined;
  let child: ChildProcess | undefined;
  let interrupted: NodeJS.Signals | undefined;
  // The command runs in its own process group (below), so a terminal's Ctrl-C reaches it once,
  // from here: a second SIGINT would make vitest exit at once without cleaning up.
  const onSignal = (signal: NodeJS.Signals) => {
    interrupted ??= signal;
    if (child !== undefined) signalGroup(child, signal);
    else void postgres?.stop();
  };
  for (const signal of forwardedSignals) process.on(signal, onSignal);
  // The command and Postgres run in process groups of their own: if this process dies some way
  // that skips `finally`, they must not outlive it.
  const onExit = () => {
    if (child !== undefined) signalGroup(child, "SIGTERM");
    postgres?.signalStop();
  };
  process.on("exit", onExit);
  try {
    await natsServerBinary("the tests start a nats-server of their own for every test file");
    await mkdir(path.join(root, ".data"), { recursive: true });
    const postgresLog = createWriteStream(path.join(root, postgresLogFile));
    try {
      postgres = await ensurePostgres(
        {
          databaseUrl: testServers.postgresUrl,
          dataDirectory: path.join(root, postgresDataDirectory),
          log,
          output: postgresLog,
          labelWidth: "postgres".length,
        },
        (starting) => {
          postgres = starting;
        },
      );
    } catch (error) {
      // A failed start explains itself in Postgres' own log; a refused probe does not need it.
      if (postgres === undefined) throw error;
      throw new Error(`${errorMessage(error)} (its log: ${postgresLogFile})`);
    }
    if (postgres === undefined) log.info(`using the Postgres at ${redactUrl(testServers.postgresUrl)}`);
    if (interrupted !== undefined) return signalExitCode(interrupted);
    child = spawn(command, args, { cwd: root, stdio: ["ignore", "inherit", "inherit"], detached: true });
    return await exitCodeOf(child);
  } catch (error) {
    log.error(errorMessage(error));
    return 1;
  } finally {
    await postgres?.stop();
    for (const signal of forwardedSignals) process.off(signal, onSignal);
    process.off("exit", onExit);
  }
}

/** Signals the command's whole process group (pnpm, turbo, vitest and its workers). */
function signalGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  try {
    process.kill(-child.pid, signal);
  } catch {
    // ESRCH: the group ended between the check and the signal.
  }
}

function exitCodeOf(child: ChildProcess): Promise<number> {
  return new Promise((resolve) => {
    child.once("exit", (code, signal) => resolve(code ?? signalExitCode(signal ?? "SIGKILL")));
    child.once("error", (error) => {
      log.error(`could not start ${child.spawnfile}: ${error.message}`);
      resolve(notStartedExitCode);
    });
  });
}

/** A shell's convention for a command ended by a signal: 128 + its number. */
function signalExitCode(signal: NodeJS.Signals): number {
  return 128 + constants.signals[signal];
}

if (import.meta.main) {
  // process.exit, not exitCode: a straggler handle must not keep `./ov test` from returning.
  process.exit(await runTests(process.cwd(), process.argv.slice(2)));
}
