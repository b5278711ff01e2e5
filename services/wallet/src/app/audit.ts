// Use case: prove the ledger balances. Facts that must hold on a live database: every asset
// sums to zero over all accounts (the mint carries the negative side of what was issued); no
// user balance is negative; every account's balance equals its journal of transfers;
// gifts-in-transit is never below zero and holds exactly the gift debits not yet credited;
// what left gifts-in-transit equals what the gift settlements shared out (each gift debit is
// credited at most once); the holds account holds exactly the pending holds; every PURCHASE,
// REFUND and PROMOTION transfer rests on its fact (a signed card payment, a captured hold, a
// credit of a funded budget) and so does every funding of promotions; and promotions hold
// exactly what the budgets have left.
import type { Ledger } from "./ports.ts";

/** One fact the audit checked, in words: "COIN: 12 accounts sum to 0". */
export interface AuditCheck {
  passed: boolean;
  text: string;
}

export interface AuditReport {
  ok: boolean;
  checks: AuditCheck[];
  /** The checks as the CLI prints them: "ok   …" or "FAIL …". */
  lines: string[];
}

export async function auditLedger(store: Pick<Ledger, "auditFacts">): Promise<AuditReport> {
  const facts = await store.auditFacts();
  const checks: AuditCheck[] = [];
  const check = (passed: boolean, text: string) => checks.push({ passed, text });
  // A kind of problem that found no row is one passed check, not silence.
  const none = (text: string) => check(true, text);
  for (const { asset, total, accounts } of facts.sums) {
    check(BigInt(total) === 0n, `${asset}: ${accounts} accounts sum to ${total}`);
  }
  if (facts.sums.length === 0) none("no accounts yet");
  for (const row of facts.negativeUsers)
    check(false, `${row.owner} holds ${row.balance} ${row.asset} (below zero)`);
  if (facts.negativeUsers.length === 0) none("no user balance below zero");
  for (const row of facts.journalMismatches) {
    check(false, `${row.owner} ${row.asset}: balance ${row.balance} but journal says ${row.journal}`);
  }
  if (facts.journalMismatches.length === 0) none("every balance matches its journal");
  for (const { asset, balance, unsettled } of facts.giftsInTransit) {
    check(
      BigInt(balance) >= 0n,
      `gifts-in-transit ${asset}: ${balance} summed over its shards, not below zero`,
    );
    check(
      balance === unsettled,
      `gifts-in-transit ${asset}: ${balance} equals the uncredited gift debits (${unsettled})`,
    );
  }
  for (const { settled, credited } of facts.settlementMismatches) {
    check(
      settled === credited,
      `gift credits out of transit (${credited}) equal the settled gift debits (${settled})`,
    );
  }
  for (const { asset, balance, pending } of facts.holds) {
    check(balance === pending, `holds ${asset}: ${balance} equals the pending holds (${pending})`);
  }
  for (const row of facts.unfounded)
    check(false, `${row.kind} transfer ${row.id} of ${row.amount}: ${row.why}`);
  if (facts.unfounded.length === 0)
    none("every PURCHASE, REFUND, PROMOTION and promotion funding rests on its fact");
  for (const { asset, balance, remaining } of facts.promotions) {
    check(
      balance === remaining,
      `promotions ${asset}: ${balance} equals what the budgets have left (${remaining})`,
    );
  }
  for (const row of facts.budgetCounts)
    check(false, `budget ${row.budget_id} counts ${row.spent} credits spent but ${row.credits} were paid`);
  return {
    ok: checks.every((one) => one.passed),
    checks,
    lines: checks.map((one) => `${one.passed ? "ok  " : "FAIL"} ${one.text}`),
  };
}
