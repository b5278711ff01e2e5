// `./ov ledger audit`: proves on the configured database that every asset sums to zero, no
// user balance is negative and every balance matches its journal. Exits 1 when any fails.
import { loadConfig } from "@ovation/config";
import { auditLedger } from "./app/audit.ts";
import { walletConfigSchema } from "./config.ts";
import { openWalletDatabase } from "./main.ts";
import { LedgerStore } from "./store/ledger-store.ts";

const usage = "usage: ledger audit";

async function main(args: string[]): Promise<number> {
  if (args[0] !== "audit") {
    console.error(usage);
    return 2;
  }
  // The audit verifies no tokens; a placeholder key satisfies the shared schema.
  const config = loadConfig(walletConfigSchema, { JWT_SECRET: "x".repeat(32), ...process.env });
  const orm = await openWalletDatabase(config, false);
  try {
    const report = await auditLedger(new LedgerStore(orm, config.WALLET_SYSTEM_SHARDS));
    for (const line of report.lines) console.log(line);
    console.log(report.ok ? "ledger audit passed" : "ledger audit FAILED");
    return report.ok ? 0 : 1;
  } finally {
    await orm.close();
  }
}

process.exitCode = await main(process.argv.slice(2));
