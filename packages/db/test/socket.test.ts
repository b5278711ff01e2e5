import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { testServers } from "@ovation/testkit";
import pg from "pg";
import { afterAll, describe, expect, it } from "vitest";
import { openDatabase } from "../src/database.ts";
import { preferUnixSocket } from "../src/socket.ts";

const directory = mkdtempSync(join(tmpdir(), "ovation-socket-"));
writeFileSync(join(directory, ".s.PGSQL.5499"), "");
afterAll(() => rmSync(directory, { recursive: true, force: true }));

describe("preferUnixSocket", () => {
  it("adds the socket directory for a local server whose socket exists, and nothing otherwise", () => {
    expect(preferUnixSocket("postgres://u@127.0.0.1:5499/db", directory)).toBe(
      `postgres://u@127.0.0.1:5499/db?host=${encodeURIComponent(directory)}`,
    );
    expect(preferUnixSocket("postgres://u@localhost:5499/db?sslmode=disable", directory)).toContain("host=");
    // No socket for that port, a remote server, a socket already chosen: unchanged.
    for (const url of [
      "postgres://u@127.0.0.1:5432/db",
      "postgres://u@db.internal:5499/db",
      "postgres://u@127.0.0.1:5499/db?host=%2Ftmp",
    ])
      expect(preferUnixSocket(url, directory)).toBe(url);
  });

  it("connects MikroORM through the socket a URL's host= names (MikroORM alone drops it)", async () => {
    const tcpUrl = new URL(testServers.postgresUrl);
    tcpUrl.searchParams.delete("host");
    const admin = new pg.Client({ connectionString: tcpUrl.toString() });
    await admin.connect();
    const { rows } = await admin.query<{ d: string }>(
      "select current_setting('unix_socket_directories') as d",
    );
    await admin.end();
    const socketDirectory = rows[0]!.d.split(",")[0]!.trim();
    expect(socketDirectory, "the test server listens on no Unix socket").not.toBe("");
    tcpUrl.searchParams.set("host", socketDirectory);
    const orm = await openDatabase({
      url: tcpUrl.toString(),
      schema: "public",
      entities: [],
      migrations: [],
    });
    try {
      const [row] = await orm.em
        .fork()
        .execute<{ tcp: boolean }[]>("select inet_client_addr() is not null as tcp");
      expect(row!.tcp).toBe(false);
    } finally {
      await orm.close();
    }
  });
});
