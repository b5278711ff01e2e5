// Proves the operator commands' database check names what is wrong in one line, against the
// real Postgres: an unreachable server, a database no service has run on, a schema without the
// table (listing those that have it), and silence when the table is there.
import { testEnvironment } from "@ovation/testkit";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { missingTable } from "../src/index.ts";

const environment = await testEnvironment();
const databaseUrl = environment.databaseUrl;

async function execute(sql: string): Promise<void> {
  const client = new pg.Client({ connectionString: databaseUrl });
  await client.connect();
  try {
    await client.query(sql);
  } finally {
    await client.end();
  }
}

afterAll(() => environment[Symbol.asyncDispose]());

describe("missingTable", () => {
  it("says that a database no service has run on has the table nowhere", async () => {
    expect(await missingTable(databaseUrl, "wallet", "outbox")).toBe(
      `the database at ${databaseUrl} has no table named outbox in any schema: no service has run on it. Is DATABASE_URL the database of the services?`,
    );
  });

  describe("with outbox tables in two schemas", () => {
    beforeAll(() =>
      execute(
        "create schema wallet; create table wallet.outbox (id int); create schema gift; create table gift.outbox (id int); create schema pk",
      ),
    );

    it("is silent when the table is there", async () => {
      expect(await missingTable(databaseUrl, "wallet", "outbox")).toBeUndefined();
    });

    it("lists the schemas that have the table when asked for another", async () => {
      for (const schema of ["nosuch", "pk"]) {
        expect(await missingTable(databaseUrl, schema, "outbox")).toBe(
          `the database at ${databaseUrl} has no table ${schema}.outbox; the schemas with a table named outbox: gift, wallet`,
        );
      }
    });
  });

  it("says which database it could not reach, without its password", async () => {
    const url = new URL(databaseUrl);
    url.password = "secret";
    url.pathname = "/no_such_database_here";
    const message = await missingTable(url.toString(), "wallet", "outbox");
    // The test kit may add libpq's ?host= for the Unix socket (0036): it stays, the password goes.
    expect(message).toMatch(
      /^cannot reach the database at postgres:\/\/postgres:\*\*\*@[^ ]*\/no_such_database_here(\?[^ ]*)? \(DATABASE_URL\): /,
    );
    expect(message).toContain('database "no_such_database_here" does not exist');
  });
});
