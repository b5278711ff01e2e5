// Operator commands on the configured database and NATS (DATABASE_URL, NATS_URL,
// OVATION_PREFIX), run through the wrapper:
//   ./ov ledger audit          every asset sums to zero, no user balance is negative and every
//                              balance matches its journal; exits 1 when any check fails
//   ./ov dlq list [PAGE]       dead-lettered events, 20 per page (PAGE: a token a list printed)
//   ./ov dlq show ID           one entry with its payload (base64)
//   ./ov dlq replay ID         has the consumer that gave up on the event process it again (from
//                              its stream), then removes the entry
//   ./ov dlq discard ID        removes the entry
//   ./ov outbox list SCHEMA    outbox rows of a service (wallet, gift, …) that JetStream refused,
//                              with their attempts, last error and next attempt
//   ./ov outbox retry SCHEMA ID  sends that row again now instead of after its backoff
// The DLQ commands are the CLI twin of ovation.dlq.v1.DlqService (same DlqAdmin underneath).
// On NATS the commands are the operator, `ops`: NATS_NKEY_FILE, or OVATION_KEY_DIR's nats/ops.nk.
// A database without the table a command reads (a wrong DATABASE_URL, an unknown SCHEMA) is
// said so in one line, with exit code 1, before anything else runs.
import { toJson } from "@bufbuild/protobuf";
import { ConnectError } from "@connectrpc/connect";
import { loadConfig, operatorSchema, redactUrl } from "@ovation/config";
import { databasePool } from "@ovation/db";
import { DlqAdmin, dlqStream, EventBus, isNotFound, OutboxAdmin } from "@ovation/events";
import { missingTable } from "@ovation/operator";
import { DlqEntrySchema } from "@ovation/proto/gen/ovation/dlq/v1/dlq_pb.ts";
import { auditLedger } from "./app/audit.ts";
import { type WalletCliConfig, walletCliConfigSchema } from "./config.ts";
import { openWalletDatabase, walletDatabase } from "./store/database.ts";
import { LedgerStore } from "./store/ledger-store.ts";

const usage = `usage: ./ov ledger audit
       ./ov dlq list [PAGE_TOKEN] | ./ov dlq show ID | ./ov dlq replay ID | ./ov dlq discard ID
       ./ov outbox list SCHEMA | ./ov outbox retry SCHEMA ID`;

/** Prints why the table cannot be read, if it cannot: the caller then exits 1. */
async function reportMissing(config: WalletCliConfig, schema: string, table: string): Promise<boolean> {
  const problem = await missingTable(config.DATABASE_URL, schema, table);
  if (problem !== undefined) console.error(problem);
  return problem !== undefined;
}

async function audit(config: WalletCliConfig): Promise<number> {
  if (await reportMissing(config, walletDatabase.schema, "accounts")) return 1;
  const orm = await openWalletDatabase(config, false);
  try {
    const store = new LedgerStore(orm, config.WALLET_SYSTEM_SHARDS, {
      batchMax: config.WALLET_TRANSFER_BATCH_MAX,
      queueMax: config.WALLET_TRANSFER_QUEUE_MAX,
    });
    const report = await auditLedger(store);
    for (const line of report.lines) console.log(line);
    console.log(report.ok ? "ledger audit passed" : "ledger audit FAILED");
    return report.ok ? 0 : 1;
  } finally {
    await orm.close();
  }
}

/** A DLQ stream that is not there means another OVATION_PREFIX or NATS: say so, not "stream not found". */
async function reportMissingDlq(bus: EventBus, config: WalletCliConfig): Promise<boolean> {
  const stream = bus.names.stream(dlqStream);
  try {
    await bus.jsm.streams.info(stream);
    return false;
  } catch (error) {
    if (!isNotFound(error)) throw error;
    console.error(
      `the NATS at ${redactUrl(config.NATS_URL)} has no stream ${stream}: no service has run there ` +
        `with OVATION_PREFIX="${config.OVATION_PREFIX}". Are NATS_URL and OVATION_PREFIX those of the services?`,
    );
    return true;
  }
}

async function dlq(
  config: WalletCliConfig,
  verb: string | undefined,
  argument: string | undefined,
): Promise<number> {
  const id = /^\d{1,15}$/.test(argument ?? "") ? BigInt(argument!) : undefined;
  if (verb !== "list" && id === undefined) {
    console.error(usage);
    return 2;
  }
  let bus: EventBus;
  try {
    bus = await EventBus.connect({
      url: config.NATS_URL,
      prefix: config.OVATION_PREFIX,
      name: "dlq-cli",
      identity: "ops",
      nkeySeed: config.NATS_NKEY_FILE?.seed,
    });
  } catch (error) {
    const message = (error as Error).message;
    // The refusal messages name the server already; a bare "connection refused" does not.
    console.error(
      message.includes("NATS at")
        ? message
        : `cannot reach NATS at ${redactUrl(config.NATS_URL)}: ${message}`,
    );
    return 1;
  }
  if (await reportMissingDlq(bus, config)) {
    await bus.close();
    return 1;
  }
  const admin = new DlqAdmin(bus);
  const print = (value: unknown) => console.log(JSON.stringify(value, null, 2));
  try {
    switch (verb) {
      case "list": {
        const page = await admin.list(0, argument ?? "");
        for (const entry of page.entries) print(toJson(DlqEntrySchema, entry));
        console.log(
          page.nextPageToken === "" ? `${page.entries.length} entries` : `next page: ${page.nextPageToken}`,
        );
        return 0;
      }
      case "show":
        print(toJson(DlqEntrySchema, await admin.get(id!)));
        return 0;
      case "replay":
        console.log(
          `replayed entry ${id}: its consumer applied sequence ${await admin.replay(id!)} of its stream again`,
        );
        return 0;
      case "discard":
        await admin.discard(id!);
        console.log(`discarded entry ${id}`);
        return 0;
      default:
        console.error(usage);
        return 2;
    }
  } catch (error) {
    console.error(ConnectError.from(error).rawMessage);
    return 1;
  } finally {
    await bus.close();
  }
}

async function outbox(
  config: WalletCliConfig,
  verb: string | undefined,
  schema: string | undefined,
  id: string | undefined,
): Promise<number> {
  if (
    schema === undefined ||
    !/^[a-z][a-z0-9_]{0,62}$/.test(schema) ||
    (verb !== "list" && !(verb === "retry" && id !== undefined))
  ) {
    console.error(usage);
    return 2;
  }
  if (await reportMissing(config, schema, "outbox")) return 1;
  // A plain pool: an operator's look at an outbox must not create or migrate anything.
  const pool = databasePool(config.DATABASE_URL, { max: 1 });
  try {
    const admin = new OutboxAdmin(pool, schema);
    if (verb === "retry") {
      if (await admin.retryNow(id!)) {
        console.log(`outbox row ${id} is due now`);
        return 0;
      }
      console.error(`no outbox row ${id} in ${schema}`);
      return 1;
    }
    const rows = await admin.failing();
    for (const row of rows) console.log(JSON.stringify(row, null, 2));
    console.log(`${rows.length} outbox rows failed to publish at least once`);
    return 0;
  } catch (error) {
    console.error((error as Error).message);
    return 1;
  } finally {
    await pool.end();
  }
}

async function main([command, ...rest]: string[]): Promise<number> {
  const config = loadConfig(operatorSchema(walletCliConfigSchema));
  switch (command) {
    case "audit":
      return audit(config);
    case "dlq":
      return dlq(config, rest[0], rest[1]);
    case "outbox":
      return outbox(config, rest[0], rest[1], rest[2]);
    default:
      console.error(usage);
      return 2;
  }
}

process.exitCode = await main(process.argv.slice(2));
