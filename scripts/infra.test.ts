// Proves the local infrastructure that `./ov up` and `./ov test` share starts what is missing
// and only that: an embedded Postgres on an unused local port, in a process group of its own (a
// terminal's Ctrl-C must not stop it under the services still draining into it), which stops
// when asked; a Postgres that answers is left alone and a remote one is never started;
// nats-server from PATH starts and stops, and a missing one is an error that says how to install
// it.
import { chmod, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { PassThrough } from "node:stream";
import { freePort } from "@ovation/testkit/bench";
import { testServers } from "@ovation/testkit/servers";
import { afterAll, describe, expect, it } from "vitest";
import {
  ensurePostgres,
  type Log,
  natsServerBinary,
  portAcceptsConnections,
  postgresAnswers,
  spawnNatsServer,
  stopProcesses,
  waitUntilListening,
} from "./infra.ts";

const root = await mkdtemp(path.join(tmpdir(), "ovation-infra-"));
// Run as root, Postgres runs as 'postgres', which must pass through this directory.
await chmod(root, 0o755);
afterAll(() => rm(root, { recursive: true, force: true }));

const reports: string[] = [];
const log: Log = {
  info: (message) => reports.push(message),
  error: (message) => reports.push(`error: ${message}`),
};

function postgresOptions(databaseUrl: string) {
  return {
    databaseUrl,
    dataDirectory: path.join(root, "postgres"),
    log,
    output: new PassThrough().resume(),
    labelWidth: 8,
  };
}

describe("ensurePostgres", () => {
  it("starts an embedded Postgres where nothing answers on a local address, and stops it", async () => {
    const port = await freePort();
    const url = `postgres://postgres@127.0.0.1:${port}/postgres`;
    expect(await portAcceptsConnections({ host: "127.0.0.1", port })).toBe(false);

    const server = await ensurePostgres(postgresOptions(url));

    expect(server).toBeDefined();
    expect(await postgresAnswers(url)).toBe(true);
    expect(reports).toContain(`embedded Postgres is ready on port ${port}`);
    await server!.stop();
    expect(await portAcceptsConnections({ host: "127.0.0.1", port })).toBe(false);
  });

  it("runs Postgres in a process group of its own", async () => {
    const port = await freePort();
    const server = await ensurePostgres(postgresOptions(`postgres://postgres@127.0.0.1:${port}/postgres`));
    try {
      const pid = server!.pid!;
      // Signal 0 to -pid reaches a process group with that id: it exists only if Postgres leads one.
      expect(() => process.kill(-pid, 0)).not.toThrow();
    } finally {
      await server!.stop();
    }
  });

  it("uses a Postgres that answers and leaves it alone", async () => {
    expect(await ensurePostgres(postgresOptions(testServers.postgresUrl))).toBeUndefined();
    expect(await postgresAnswers(testServers.postgresUrl)).toBe(true);
  });

  it("never starts one for a remote address", async () => {
    // TEST-NET-1 (RFC 5737): never a host of ours, and nothing answers there.
    await expect(
      ensurePostgres(postgresOptions("postgres://postgres@192.0.2.1:5432/postgres")),
    ).rejects.toThrow(
      "Postgres does not answer at 192.0.2.1:5432; an embedded one can only run on this machine",
    );
  });
});

describe("nats-server", () => {
  it("starts from PATH on an unused local port and stops", async () => {
    const port = await freePort();
    const configFile = path.join(root, "nats.conf");
    await writeFile(configFile, `listen: "127.0.0.1:${port}"\n`);
    const binary = await natsServerBinary("test");
    const output = new PassThrough().resume();

    const nats = spawnNatsServer(binary, configFile, {
      cwd: root,
      labelWidth: 4,
      stdout: output,
      stderr: output,
    });

    expect(await waitUntilListening(nats, { host: "127.0.0.1", port }, 15_000)).toBe(true);
    await stopProcesses([nats], 5_000, (message) => expect.fail(message));
    expect(nats.child.exitCode ?? nats.child.signalCode).not.toBeNull();
    expect(await portAcceptsConnections({ host: "127.0.0.1", port })).toBe(false);
  });

  it("is an error that says how to install it when it is not on PATH", async () => {
    await expect(natsServerBinary("NATS does not answer", root)).rejects.toThrow(
      "NATS does not answer and nats-server is not on PATH. Install nats-server 2.9 or newer (Debian/Ubuntu: apt-get install nats-server",
    );
  });
});
