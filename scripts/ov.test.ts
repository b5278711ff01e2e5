// Proves the `./ov` commands a newcomer runs first print only their answer: no codegen banner
// before it, no token echoed by `./ov buf`, and for an unknown name (a schema, a consumer, an
// order) or a database or NATS that does not hold what the services wrote, one line that says
// so and a non-zero exit code instead of a driver's stack trace.
import { spawn } from "node:child_process";
import path from "node:path";
import { type TestEnvironment, testEnvironment } from "@ovation/testkit";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const ov = path.resolve(import.meta.dirname, "..", "ov");
/** The one line `./ov` adds when proto/ changed and the code was generated again. */
const generatedNote = "[ov] generated code from proto/\n";

type Result = { code: number | null; stdout: string; stderr: string };

function run(args: string[], env: Record<string, string> = {}): Promise<Result> {
  const child = spawn(ov, args, { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (chunk) => {
    stdout += String(chunk);
  });
  child.stderr.on("data", (chunk) => {
    stderr += String(chunk);
  });
  return new Promise((resolve) =>
    child.once("exit", (code) => resolve({ code, stdout, stderr: stderr.replace(generatedNote, "") })),
  );
}

let environment: TestEnvironment;
let databaseUrl: string;

beforeAll(async () => {
  environment = await testEnvironment();
  databaseUrl = environment.databaseUrl;
});
afterAll(() => environment[Symbol.asyncDispose]());

describe("./ov", () => {
  it("prints a command's answer and nothing of the code generation before it", async () => {
    const result = await run(["saga", "show", "not-an-order"]);

    expect(result).toEqual({ code: 2, stdout: "", stderr: "not an order id: not-an-order\n" });
  });

  it("runs buf without echoing its command line, so a token stays off the screen", async () => {
    const token = "secret-token-for-the-echo-test";
    // Port 1: nothing answers, so buf fails at once (reflection finds no schema); only its own
    // error line may show.
    const result = await run([
      "buf",
      "curl",
      "--protocol",
      "grpc",
      "--http2-prior-knowledge",
      "-H",
      `authorization: Bearer ${token}`,
      "http://127.0.0.1:1/ovation.wallet.v1.WalletService/GetBalances",
    ]);

    expect(result).toEqual({
      code: 1,
      stdout: "",
      stderr: 'Failure: failed to find service named "ovation.wallet.v1.WalletService" in schema\n',
    });
  });

  it("refuses a consumer nobody replays, naming those that can be", async () => {
    const result = await run(["replay", "nosuch"]);

    expect(result).toEqual({
      code: 2,
      stdout: "",
      stderr: "replay: no replayable consumer named 'nosuch' (replayable: gift-discovery, pk-side-boosts)\n",
    });
  });

  describe("on a database no service has run on", () => {
    const nowhere = (table: string) =>
      `the database at ${databaseUrl} has no table named ${table} in any schema: no service has run on it. Is DATABASE_URL the database of the services?\n`;

    it.each([
      [["saga", "show", "0f8fad5b-d9cb-469f-a165-70867728950e"], "orders"],
      [["ledger", "audit"], "accounts"],
      [["outbox", "list", "wallet"], "outbox"],
      [["jobs", "failed"], "jobs"],
      [["replay", "gift-discovery"], "inbox"],
    ])("./ov %j says so in one line", async (args, table) => {
      const result = await run(args, {
        DATABASE_URL: databaseUrl,
        OVATION_KEY_DIR: environment.keys.directory,
      });

      expect(result).toEqual({ code: 1, stdout: "", stderr: nowhere(table) });
    });
  });

  it("names the schemas that have an outbox when asked for one that has none", async () => {
    const client = new pg.Client({ connectionString: databaseUrl });
    await client.connect();
    await client.query(
      "create schema gift; create table gift.outbox (id bigint); create schema wallet; create table wallet.outbox (id bigint)",
    );
    await client.end();

    const result = await run(["outbox", "list", "nosuch"], { DATABASE_URL: databaseUrl });

    expect(result).toEqual({
      code: 1,
      stdout: "",
      stderr: `the database at ${databaseUrl} has no table nosuch.outbox; the schemas with a table named outbox: gift, wallet\n`,
    });
  });

  it("says which NATS it could not reach", async () => {
    const result = await run(["dlq", "list"], {
      NATS_URL: "nats://127.0.0.1:1",
      OVATION_KEY_DIR: environment.keys.directory,
    });

    expect(result).toEqual({
      code: 1,
      stdout: "",
      stderr: "cannot reach NATS at nats://127.0.0.1:1: connection refused\n",
    });
  });

  it("says when NATS has no DLQ stream under OVATION_PREFIX", async () => {
    const result = await run(["dlq", "list"], {
      NATS_URL: environment.natsUrl,
      OVATION_PREFIX: environment.prefix,
      OVATION_KEY_DIR: environment.keys.directory,
    });

    const stream = `${environment.prefix.toUpperCase()}_DLQ`;
    expect(result).toEqual({
      code: 1,
      stdout: "",
      stderr: `the NATS at ${environment.natsUrl} has no stream ${stream}: no service has run there with OVATION_PREFIX="${environment.prefix}". Are NATS_URL and OVATION_PREFIX those of the services?\n`,
    });
  });
});
