// Proves `./ov test`'s runner (scripts/test-infra.ts) gives the command a Postgres and takes it
// away again: with nothing at TEST_DATABASE_URL on a local port it starts an embedded one that
// answers while the command runs and is gone afterwards, whether the command fails or Ctrl-C
// interrupts it (the exit code tells which); a Postgres that answers is used and left alone; a
// remote address and a missing nats-server stop it before the command runs.
import { spawn } from "node:child_process";
import { chmod, mkdtemp, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { freePort } from "@ovation/testkit/bench";
import { testServers } from "@ovation/testkit/servers";
import { afterAll, describe, expect, it } from "vitest";
import { portAcceptsConnections, postgresAnswers } from "./infra.ts";

const runner = path.join(import.meta.dirname, "test-infra.ts");
// The runner keeps .data/test-postgres under its working directory: this file gets its own.
const root = await mkdtemp(path.join(tmpdir(), "ovation-test-infra-"));
await chmod(root, 0o755);
afterAll(() => rm(root, { recursive: true, force: true }));

/** Prints a marker, then exits 3 when the port answers and 4 when it does not. */
const probe = (port: number) =>
  `require("net").connect(${port}, "127.0.0.1")` +
  `.on("connect", () => { console.log("command ran"); process.exit(3); })` +
  `.on("error", () => { console.log("command ran"); process.exit(4); })`;
/** Prints a marker and runs until a signal ends it. */
const waiter = `console.log("command running"); setInterval(() => {}, 1000);`;

type Run = { code: number | null; output: string };

function startRunner(testDatabaseUrl: string, script: string, env: NodeJS.ProcessEnv = process.env) {
  const child = spawn(process.execPath, [runner, process.execPath, "-e", script], {
    cwd: root,
    env: { ...env, TEST_DATABASE_URL: testDatabaseUrl },
    stdio: ["ignore", "pipe", "pipe"],
    // A group of its own, like a shell job, so the test can send it a terminal's Ctrl-C.
    detached: true,
  });
  let output = "";
  const collect = (chunk: Buffer) => {
    output += String(chunk);
  };
  child.stdout.on("data", collect);
  child.stderr.on("data", collect);
  const done = new Promise<Run>((resolve) => child.once("exit", (code) => resolve({ code, output })));
  return { child, done, output: () => output };
}

const localUrl = (port: number) => `postgres://postgres@127.0.0.1:${port}/postgres`;

describe("./ov test's runner", () => {
  it("starts Postgres for a failing command, passes its exit code on and stops Postgres", async () => {
    const port = await freePort();

    const run = await startRunner(localUrl(port), probe(port)).done;

    expect(run.output).toContain(
      `Postgres does not answer at 127.0.0.1:${port}: starting an EMBEDDED Postgres`,
    );
    expect(run.output).toContain("command ran");
    expect(run.code, run.output).toBe(3);
    expect(run.output).toContain("stopping embedded Postgres");
    expect(await portAcceptsConnections({ host: "127.0.0.1", port })).toBe(false);
    expect((await stat(path.join(root, ".data/test-postgres/PG_VERSION"))).isFile()).toBe(true);
  });

  it("stops the command and then Postgres on Ctrl-C", async () => {
    const port = await freePort();
    const run = startRunner(localUrl(port), waiter);
    await expect.poll(run.output, { timeout: 60_000 }).toContain("command running");
    expect(await postgresAnswers(localUrl(port))).toBe(true);

    // A terminal's Ctrl-C: SIGINT to the foreground job's process group.
    process.kill(-run.child.pid!, "SIGINT");
    const { code, output } = await run.done;

    expect(code, output).toBe(130);
    expect(output).toContain("stopping embedded Postgres");
    expect(await portAcceptsConnections({ host: "127.0.0.1", port })).toBe(false);
  });

  it("uses a Postgres that answers and leaves it running", async () => {
    const port = Number(new URL(testServers.postgresUrl).port || 5432);

    const run = await startRunner(testServers.postgresUrl, probe(port)).done;

    expect(run.code, run.output).toBe(3);
    expect(run.output).toContain(`using the Postgres at ${testServers.postgresUrl}`);
    expect(run.output).not.toContain("EMBEDDED");
    expect(await postgresAnswers(testServers.postgresUrl)).toBe(true);
  });

  it("never starts Postgres for a remote address, nor runs the command", async () => {
    // TEST-NET-1 (RFC 5737): never a host of ours, and nothing answers there.
    const run = await startRunner("postgres://postgres@192.0.2.1:5432/postgres", probe(1)).done;

    expect(run.code, run.output).toBe(1);
    expect(run.output).toContain("an embedded one can only run on this machine");
    expect(run.output).not.toContain("command ran");
  });

  it("refuses to run without nats-server on PATH, before starting anything", async () => {
    const port = await freePort();
    const env = { ...process.env, PATH: path.dirname(process.execPath) };

    const run = await startRunner(localUrl(port), probe(port), env).done;

    expect(run.code, run.output).toBe(1);
    expect(run.output).toContain(
      "the tests start a nats-server of their own for every test file and nats-server is not on PATH",
    );
    expect(run.output).not.toContain("command ran");
    expect(run.output).not.toContain("EMBEDDED");
  });
});
