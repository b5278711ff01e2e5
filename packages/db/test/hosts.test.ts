// Multi-host URLs (hosts.ts): libpq's host lists parse, and a pool of a pg_auto_failover
// formation follows the primary through a failover on its own: while no node accepts writes its
// connections fail as outages (503, retried with the same key), and once the standby is promoted
// the same pool writes to it, also when the URL names the standby first.
import { FaultProxy, testEnvironment, testServers, waitFor } from "@ovation/testkit";
import { describe, expect, it } from "vitest";
import {
  databaseClient,
  databasePool,
  isInfrastructureError,
  parseDatabaseUrl,
  withHost,
} from "../src/index.ts";

describe("database URLs with several hosts", () => {
  it("reads libpq's host lists, ports, IPv6 and target_session_attrs", () => {
    const url = parseDatabaseUrl(
      "postgres://app:s%40cret@10.0.0.1:5441,[::1]:5442,db3/ovation?target_session_attrs=read-write&sslmode=disable",
    );
    expect(url.hosts).toEqual([
      { host: "10.0.0.1", port: 5441 },
      { host: "::1", port: 5442 },
      { host: "db3", port: 5432 },
    ]);
    expect({
      user: url.user,
      password: url.password,
      database: url.database,
      readWrite: url.readWrite,
    }).toEqual({
      user: "app",
      password: "s@cret",
      database: "ovation",
      readWrite: true,
    });
    expect(url.params.toString()).toBe("sslmode=disable");
    expect(
      withHost("postgres://app@h1:1,h2:2/db?target_session_attrs=read-write", { host: "h2", port: 2 }),
    ).toBe("postgres://app@h2:2/db");
    expect(() => parseDatabaseUrl("postgres://h1:99999/db")).toThrow(/invalid port/);
    expect(() => parseDatabaseUrl("postgres://h1/db?target_session_attrs=standby")).toThrow(/not supported/);
    expect(() => parseDatabaseUrl("mysql://h1/db")).toThrow(/postgres/);
  });

  it("connects to the first host that answers when a host is down", async () => {
    await using proxy = await FaultProxy.start(testServers.postgresUrl);
    proxy.cut();
    const shared = new URL(testServers.postgresUrl);
    const down = new URL(proxy.url(testServers.postgresUrl));
    const url = `postgres://postgres@${down.host},${shared.host}/postgres?target_session_attrs=read-write`;
    const client = databaseClient(url);
    await client.connect();
    try {
      const { rows } = await client.query<{ port: number }>("select inet_server_port() as port");
      expect(rows[0]?.port).toBe(Number(shared.port || 5432));
    } finally {
      await client.end();
    }
  });

  it("follows the primary of a formation through a failover without a new pool", async () => {
    await using env = await testEnvironment({ postgresFormation: true });
    const formation = env.postgresFormation!;
    const [first, second] = formation.nodes;
    // The standby first: read-write targeting must skip it.
    const url = `postgres://postgres@127.0.0.1:${second!.port},127.0.0.1:${first!.port}/ovation?target_session_attrs=read-write`;
    const pool = databasePool(url, { max: 3, connectionTimeoutMillis: 2_000 });
    pool.on("error", () => {});
    try {
      const primary = await formation.primary();
      expect(primary).toBe(first);
      await pool.query("create table coins (id int primary key)");
      await pool.query("insert into coins values (1)");
      const port = async () =>
        (await pool.query<{ port: number }>("select inet_server_port() as port")).rows[0]?.port;
      expect(await port()).toBe(first!.port);

      await formation.kill(first!);
      // Until the monitor promotes the standby, work fails as an outage, never as anything else.
      const failures: unknown[] = [];
      const promoted = await waitFor(
        async () => {
          try {
            // Retried with the same key, as every write of the services is: an attempt whose
            // answer was lost in the failover may have committed.
            await pool.query("insert into coins values (2) on conflict (id) do nothing");
            return true;
          } catch (error) {
            failures.push(error);
            return false;
          }
        },
        { timeoutMs: 60_000, intervalMs: 100, what: "writes through the pool after the failover" },
      );
      expect(promoted).toBe(true);
      expect(failures.length).toBeGreaterThan(0);
      expect(failures.filter((error) => !isInfrastructureError(error))).toEqual([]);
      expect(await port()).toBe(second!.port);
      // The write acknowledged before the kill survived it (the standby was synchronous).
      const { rows } = await pool.query<{ id: number }>("select id from coins order by id");
      expect(rows.map((row) => row.id)).toEqual([1, 2]);
    } finally {
      await pool.end();
    }
  }, 120_000);
});
