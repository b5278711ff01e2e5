// The PgBouncer configuration: proves that each service gets a transaction-mode pool of its own
// whose connect_query sets what the `options` start-up parameter would have (PgBouncer 1.18 cannot
// pass it on), that a pooled URL names that pool, and that docker-compose's cluster profile runs
// the configuration the code renders (deploy/pgbouncer/pgbouncer.ini).
import { readFile } from "node:fs/promises";
import path from "node:path";
import { connectionBudget } from "@ovation/config";
import { describe, expect, it } from "vitest";
import {
  defaultDatabaseTimeouts,
  pooledUrl,
  renderPgBouncerConfig,
  renderPgBouncerUsers,
  sessionSettingsQuery,
} from "../src/index.ts";

describe("PgBouncer configuration", () => {
  it("names each service's pool after the database and the schema, dropping the socket directory", () => {
    expect(
      pooledUrl("postgres://app:s%40cret@127.0.0.1:5432/ovation?host=/var/run/postgresql", "wallet", {
        host: "127.0.0.1",
        port: 6432,
      }),
    ).toBe("postgres://app:s%40cret@127.0.0.1:6432/ovation__wallet");
    // PgBouncer reaches one host: a Postgres that fails over cannot be behind it.
    expect(() =>
      pooledUrl("postgres://postgres@h1:5441,h2:5442/ovation?target_session_attrs=read-write", "gift", {
        host: "127.0.0.1",
        port: 6432,
      }),
    ).toThrow("PgBouncer 1.18 reaches one host");
  });

  it("sets the schema and the timeouts on every server connection of a pool, in transaction mode", () => {
    const config = renderPgBouncerConfig({
      directUrl: "postgres://postgres@127.0.0.1:5432/ovation?host=/var/run/postgresql",
      listenHost: "127.0.0.1",
      listenPort: 6432,
      authFile: "/tmp/users.txt",
      databases: [
        {
          schema: "gift",
          poolSize: 8,
          timeouts: { statementMs: 1_000, lockMs: 200, idleInTransactionMs: 3_000 },
        },
      ],
    });
    expect(config).toContain(
      `ovation__gift = host=/var/run/postgresql port=5432 dbname=ovation user=postgres pool_size=8 connect_query='set search_path = "gift"; set statement_timeout = 1000; set lock_timeout = 200; set idle_in_transaction_session_timeout = 3000'`,
    );
    expect(config).toMatch(/^pool_mode = transaction$/m);
    expect(config).toMatch(/^ignore_startup_parameters = options,extra_float_digits$/m);
    expect(renderPgBouncerUsers("postgres://app:pw@h/db")).toBe('"app" "pw"\n');
  });

  it("is what docker-compose's cluster profile runs", async () => {
    const committed = await readFile(
      path.resolve(import.meta.dirname, "../../../deploy/pgbouncer/pgbouncer.ini"),
      "utf8",
    );
    const rendered = renderPgBouncerConfig({
      directUrl: "postgres://postgres@postgres:5432/ovation",
      listenHost: "0.0.0.0",
      listenPort: 6432,
      authFile: "/tmp/pgbouncer-users.txt",
      authType: "scram-sha-256",
      databases: Object.entries(connectionBudget).map(([schema, poolSize]) => ({
        schema,
        poolSize,
        timeouts: defaultDatabaseTimeouts,
      })),
    });
    expect(committed.replace(/^;.*\n/gm, "")).toBe(rendered);
    expect(sessionSettingsQuery("card", defaultDatabaseTimeouts)).toContain('search_path = "card"');
  });
});
