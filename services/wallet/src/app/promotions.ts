// Use cases: promotion budgets. An admin funds a budget per discount campaign (new money from
// system:mint into system:promotions, earmarked for a number of credits of one amount each),
// and the wallet pays each redemption the discount service records out of its campaign's
// budget, never past it: a compromised discount service can at most give away what an admin
// set aside for its campaigns, to whom it chooses. Both movements are the wallet's own, made
// after the check (domain/policy.ts: "wallet").
import type { EntityManager } from "@ovation/db";
import { type ReceivedEvent, RejectedEventError } from "@ovation/events";
import type { RedemptionRecorded } from "@ovation/proto/gen/ovation/discount/v1/events_pb.ts";
import { LedgerError } from "../domain/errors.ts";
import { ledgerLimits, systemAccounts, TransferKind, userOwner } from "../domain/ledger.ts";
import type { Caller } from "../domain/policy.ts";
import type { BudgetRow, Facts, Ledger } from "./ports.ts";
import { type TransferCommand, transferAll } from "./transfer.ts";

const wallet: Caller = { kind: "wallet" };

/** The transfer key and reference of a redemption's credit (what the discount service tracks). */
export const redemptionReference = (redemptionId: string) => `discount:${redemptionId}`;

export interface FundBudgetCommand {
  /** The admin who asked. */
  admin: string;
  budgetId: string;
  asset: string;
  unitAmount: bigint;
  credits: bigint;
  /** Already scoped to the caller. */
  idempotencyKey: string;
}

export async function fundPromotionBudget(
  store: Ledger,
  facts: Facts,
  command: FundBudgetCommand,
): Promise<{ budget: BudgetRow; replayed: boolean }> {
  const total = command.unitAmount * command.credits;
  if (total > ledgerLimits.amountMax)
    throw new LedgerError("budget_mismatch", `${total} ${command.asset} is more than one transfer moves`);
  return store.fork().transactional(async (em) => {
    const existing = (await facts.lockBudgets(em, [command.budgetId])).get(command.budgetId);
    if (
      existing !== undefined &&
      (existing.asset !== command.asset || existing.unitAmount !== command.unitAmount)
    )
      throw new LedgerError(
        "budget_mismatch",
        `budget ${command.budgetId} pays ${existing.unitAmount} ${existing.asset} per credit`,
      );
    const [funding] = await transferAll(
      store,
      [
        {
          caller: wallet,
          debitOwner: systemAccounts.mint,
          creditOwner: systemAccounts.promotions,
          asset: command.asset,
          amount: total,
          kind: TransferKind.MINT,
          reference: `budget:${command.budgetId}`,
          metadata: { budget: command.budgetId, credits: String(command.credits), fundedBy: command.admin },
          idempotencyKey: command.idempotencyKey,
        },
      ],
      em,
    );
    if (funding!.replayed) return { budget: (await facts.budget(em, command.budgetId))!, replayed: true };
    const budget = await facts.fund(em, { ...command, transferId: funding!.transfer.id, by: command.admin });
    return { budget, replayed: false };
  });
}

export async function promotionBudget(store: Ledger, facts: Facts, budgetId: string): Promise<BudgetRow> {
  const budget = await facts.budget(store.fork(), budgetId);
  if (budget === null) throw new LedgerError("budget_not_found", `no promotion budget ${budgetId}`);
  return budget;
}

/**
 * Pays the credits of recorded redemptions out of their campaigns' budgets, in the consumer's
 * transaction. An event that names no funded budget, another amount than the budget's, or a
 * budget already spent is rejected (dead-lettered with the reason); a redemption already paid,
 * under whatever event id, is paid no more.
 */
export async function payPromotionCredits(
  store: Ledger,
  facts: Facts,
  em: EntityManager,
  events: readonly ReceivedEvent<RedemptionRecorded>[],
): Promise<void> {
  const budgets = await facts.lockBudgets(
    em,
    events.map((e) => e.message.campaignId),
  );
  for (const { eventId, message } of events) {
    const budget = budgets.get(message.campaignId);
    if (budget === undefined)
      throw new RejectedEventError(
        `redemption ${message.redemptionId} (event ${eventId}): no promotion budget was funded for campaign ${message.campaignId}`,
      );
    if (message.money?.asset !== budget.asset || message.money.amount !== budget.unitAmount)
      throw new RejectedEventError(
        `redemption ${message.redemptionId}: claims ${message.money?.amount} ${message.money?.asset}, campaign ${message.campaignId}'s budget pays ${budget.unitAmount} ${budget.asset}`,
      );
  }
  const paid = await facts.paidCredits(
    em,
    events.map((e) => e.message.redemptionId),
  );
  const due = new Map<string, RedemptionRecorded>();
  for (const { message } of events)
    if (!paid.has(message.redemptionId)) due.set(message.redemptionId, message);
  for (const [budgetId, count] of Map.groupBy(due.values(), (m) => m.campaignId)) {
    const budget = budgets.get(budgetId)!;
    if (budget.creditsSpent + BigInt(count.length) > budget.creditsFunded)
      throw new RejectedEventError(
        `campaign ${budgetId}'s budget is spent: ${budget.creditsSpent} of ${budget.creditsFunded} credits paid, ${count.length} more asked`,
      );
  }
  const redemptions = [...due.values()];
  const credits: TransferCommand[] = redemptions.map((message) => ({
    caller: wallet,
    debitOwner: systemAccounts.promotions,
    creditOwner: userOwner(message.userId),
    asset: message.money!.asset,
    amount: message.money!.amount,
    kind: TransferKind.PROMOTION,
    reference: redemptionReference(message.redemptionId),
    metadata: { campaign: message.campaignId, position: String(message.position) },
    idempotencyKey: redemptionReference(message.redemptionId),
  }));
  const results = await transferAll(store, credits, em);
  await facts.recordCredits(
    em,
    redemptions.map((message, index) => ({
      creditId: message.redemptionId,
      budgetId: message.campaignId,
      transferId: results[index]!.transfer.id,
    })),
  );
}
