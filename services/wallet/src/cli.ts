// Operator commands on the configured database and NATS (DATABASE_URL, NATS_URL,
// OVATION_PREFIX), run through the wrapper:
//   ./ov ledger audit          every asset sums to zero, no user balance is negative and every
//                              balance matches its journal; exits 1 when any check fails
//   ./ov dlq list [PAGE]       dead-lettered events, 20 per page (PAGE: a token a list printed)
//   ./ov dlq show ID           one entry with its payload (base64)
//   ./ov dlq replay ID         publishes the event again on its subject and removes the entry
//   ./ov dlq discard ID        removes the entry
// The DLQ commands are the CLI twin of ovation.dlq.v1.DlqService (same DlqAdmin underneath).
import { toJson } from "@bufbuild/protobuf";
import { ConnectError } from "@connectrpc/connect";
import { loadConfig } from "@ovation/config";
import { DlqAdmin, EventBus } from "@ovation/events";
import { DlqEntrySchema } from "@ovation/proto/gen/ovation/dlq/v1/dlq_pb.ts";
import { auditLedger } from "./app/audit.ts";
import { type WalletCliConfig, walletCliConfigSchema } from "./config.ts";
import { openWalletDatabase } from "./main.ts";
import { LedgerStore } from "./store/ledger-store.ts";

const usage = `usage: ledger audit
       dlq list [PAGE_TOKEN] | dlq show ID | dlq replay ID | dlq discard ID`;

async function audit(config: WalletCliConfig): Promise<number> {
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
  const bus = await EventBus.connect({
    url: config.NATS_URL,
    prefix: config.OVATION_PREFIX,
    name: "dlq-cli",
  });
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
        console.log(`replayed entry ${id} as stream sequence ${await admin.replay(id!)}`);
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

async function main([command, ...rest]: string[]): Promise<number> {
  if (command !== "audit" && command !== "dlq") {
    console.error(usage);
    return 2;
  }
  const config = loadConfig(walletCliConfigSchema);
  return command === "audit" ? audit(config) : dlq(config, rest[0], rest[1]);
}

process.exitCode = await main(process.argv.slice(2));
