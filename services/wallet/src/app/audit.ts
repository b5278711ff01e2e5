// Use case: prove the ledger balances. Three facts must hold on a live database: every asset
// sums to zero over all accounts (the mint carries the negative side of what was issued), no
// user balance is negative, and every account's balance equals its journal of transfers.
import type { LedgerStore } from "../store/ledger-store.ts";

export interface AuditReport {
  ok: boolean;
  lines: string[];
}

export async function auditLedger(store: LedgerStore): Promise<AuditReport> {
  const facts = await store.auditFacts();
  const lines: string[] = [];
  let ok = true;
  for (const { asset, total, accounts } of facts.sums) {
    const balanced = BigInt(total) === 0n;
    ok &&= balanced;
    lines.push(`${balanced ? "ok  " : "FAIL"} ${asset}: ${accounts} accounts sum to ${total}`);
  }
  if (facts.sums.length === 0) lines.push("ok   no accounts yet");
  for (const row of facts.negativeUsers) {
    ok = false;
    lines.push(`FAIL ${row.owner} holds ${row.balance} ${row.asset} (below zero)`);
  }
  for (const row of facts.journalMismatches) {
    ok = false;
    lines.push(`FAIL ${row.owner} ${row.asset}: balance ${row.balance} but journal says ${row.journal}`);
  }
  if (facts.negativeUsers.length === 0) lines.push("ok   no user balance below zero");
  if (facts.journalMismatches.length === 0) lines.push("ok   every balance matches its journal");
  return { ok, lines };
}
