// The facts behind movements that no sender consented to (migration 0006_money_facts): card
// payments that minted coins, promotion budgets with their fundings and credits. Plain SQL in
// the caller's transaction, so a fact and its transfer commit together or not at all.
import type { EntityManager } from "@ovation/db";
import type { BudgetRow, CardPaymentRow, Facts } from "../app/ports.ts";

type Row = Record<string, unknown>;

const budgetRow = (row: Row): BudgetRow => ({
  budgetId: row.budget_id as string,
  asset: row.asset as string,
  unitAmount: BigInt(row.unit_amount as string),
  creditsFunded: BigInt(row.credits_funded as string),
  creditsSpent: BigInt(row.credits_spent as string),
  createdAt: new Date(row.created_at as string | Date),
});

const budgetColumns =
  "budget_id, asset, unit_amount::text, credits_funded::text, credits_spent::text, created_at";

export class FactStore implements Facts {
  /** The card payments already minted among `chargeIds`. */
  async mintedCharges(em: EntityManager, chargeIds: readonly string[]): Promise<Set<string>> {
    if (chargeIds.length === 0) return new Set();
    const rows = await em.execute<{ charge_id: string }[]>(
      "select charge_id from card_payments where charge_id in (select value::uuid from jsonb_array_elements_text(?::jsonb))",
      [JSON.stringify(chargeIds)],
    );
    return new Set(rows.map((row) => row.charge_id));
  }

  async recordCardPayments(em: EntityManager, payments: readonly CardPaymentRow[]): Promise<void> {
    if (payments.length === 0) return;
    await em.execute(
      `insert into card_payments (charge_id, reference, customer_id, asset, paid, coins, transfer_id)
       select (p ->> 'chargeId')::uuid, p ->> 'reference', p ->> 'customerId', p ->> 'asset',
              (p ->> 'paid')::bigint, (p ->> 'coins')::bigint, (p ->> 'transferId')::uuid
       from jsonb_array_elements(?::jsonb) p`,
      [JSON.stringify(payments, (_key, value) => (typeof value === "bigint" ? value.toString() : value))],
    );
  }

  async budget(em: EntityManager, budgetId: string): Promise<BudgetRow | null> {
    const rows = await em.execute<Row[]>(
      `select ${budgetColumns} from promotion_budgets where budget_id = ?`,
      [budgetId],
    );
    return rows.length === 0 ? null : budgetRow(rows[0]!);
  }

  /** The budgets among `budgetIds`, locked in id order (the one order every writer uses). */
  async lockBudgets(em: EntityManager, budgetIds: readonly string[]): Promise<Map<string, BudgetRow>> {
    const rows = await em.execute<Row[]>(
      `select ${budgetColumns} from promotion_budgets
       where budget_id in (select value from jsonb_array_elements_text(?::jsonb)) order by budget_id for update`,
      [JSON.stringify([...new Set(budgetIds)])],
    );
    return new Map(rows.map((row) => [row.budget_id as string, budgetRow(row)]));
  }

  /** Adds funded credits, creating the budget on its first funding; returns it locked. */
  async fund(
    em: EntityManager,
    funding: {
      budgetId: string;
      asset: string;
      unitAmount: bigint;
      credits: bigint;
      transferId: string;
      by: string;
    },
  ): Promise<BudgetRow> {
    await em.execute(
      `insert into promotion_budgets (budget_id, asset, unit_amount, credits_funded) values (?, ?, ?, 0)
       on conflict (budget_id) do nothing`,
      [funding.budgetId, funding.asset, funding.unitAmount.toString()],
    );
    const rows = await em.execute<Row[]>(
      `update promotion_budgets set credits_funded = credits_funded + ? where budget_id = ?
       returning ${budgetColumns}`,
      [funding.credits.toString(), funding.budgetId],
    );
    await em.execute(
      "insert into promotion_fundings (transfer_id, budget_id, credits, funded_by) values (?, ?, ?, ?)",
      [funding.transferId, funding.budgetId, funding.credits.toString(), funding.by],
    );
    return budgetRow(rows[0]!);
  }

  /** The credits among `creditIds` already paid (by any event that named them). */
  async paidCredits(em: EntityManager, creditIds: readonly string[]): Promise<Set<string>> {
    if (creditIds.length === 0) return new Set();
    const rows = await em.execute<{ credit_id: string }[]>(
      "select credit_id from promotion_credits where credit_id in (select value from jsonb_array_elements_text(?::jsonb))",
      [JSON.stringify(creditIds)],
    );
    return new Set(rows.map((row) => row.credit_id));
  }

  /** Records paid credits and counts them against their budgets (the check constraint bounds them). */
  async recordCredits(
    em: EntityManager,
    credits: readonly { creditId: string; budgetId: string; transferId: string }[],
  ): Promise<void> {
    if (credits.length === 0) return;
    const json = JSON.stringify(credits);
    await em.execute(
      `insert into promotion_credits (credit_id, budget_id, transfer_id)
       select c ->> 'creditId', c ->> 'budgetId', (c ->> 'transferId')::uuid from jsonb_array_elements(?::jsonb) c`,
      [json],
    );
    await em.execute(
      `update promotion_budgets b set credits_spent = b.credits_spent + n.count
       from (select c ->> 'budgetId' as budget_id, count(*) as count from jsonb_array_elements(?::jsonb) c
             group by 1) n
       where b.budget_id = n.budget_id`,
      [json],
    );
  }
}
