// Wallet persistence. Every movement of money goes through the SQL function post_transfers
// (sql/post_transfers.sql), a whole batch per call: transfers from the API are group-committed through
// the batcher, and code that already runs a transaction (holds, the host-credit consumer)
// passes its EntityManager so its transfers commit with the rest of its work. Reads use
// MikroORM entities.
import { LockMode } from "@mikro-orm/core";
import {
  Batcher,
  type Database,
  type EntityManager,
  nativePool,
  preparedStatementName,
  retryRaces,
} from "@ovation/db";
import { markOutboxWritten, outboxCommitted, outboxRowsJson } from "@ovation/events";
import type pg from "pg";
import type { HoldRow, Ledger, NewHold, TransferDraft, TransferOutcome } from "../app/ports.ts";
import { LedgerError } from "../domain/errors.ts";
import { systemAccounts, TransferKind } from "../domain/ledger.ts";
import { transferBatchSize } from "../metrics.ts";
import { Account, Hold, Transfer } from "./entities.ts";

export interface BatchLimits {
  /** Transfers per post_transfers call at most. */
  batchMax: number;
  /** Transfers waiting for a batch at most; beyond, UNAVAILABLE. */
  queueMax: number;
}

const outcomes = {
  committed: "committed",
  replayed: "replayed",
  conflict: "idempotency_conflict",
  insufficient: "insufficient_funds",
  unknown_asset: "unknown_asset",
  // Another transfer carried the event already: an event is carried (and so credited) once.
  duplicate_event: "duplicate_event",
} as const;

interface PostTransfersRow {
  idx: number;
  outcome: keyof typeof outcomes;
  transfer_id: string | null;
  debit_balance: string | null;
  created_at: Date | string | null;
}

const postTransfersSql = "select * from post_transfers($1::jsonb, $2::int)";

/** Gift debits (kind GIFT into gifts-in-transit) by the id of the event each carried. */
export const giftDebitsSql = `select carried_event_id, id, amount::text, asset from transfers
  where carried_event_id = any(array(select value::uuid from jsonb_array_elements_text(?::jsonb)))
    and kind = ${TransferKind.GIFT} and credit_owner = '${systemAccounts.giftsInTransit}'`;

function batchJson(drafts: readonly TransferDraft[], createdAt: Date): string {
  return JSON.stringify(
    drafts.map((draft) => ({
      id: draft.id,
      debit: draft.debitOwner,
      credit: draft.creditOwner,
      asset: draft.asset,
      amount: draft.amount.toString(),
      kind: draft.kind,
      reference: draft.reference,
      metadata: draft.metadata,
      hold_id: draft.holdId ?? null,
      key: draft.idempotencyKey,
      hash: draft.fingerprint.toString("hex"),
      created_at: createdAt.toISOString(),
      carried_event_id: draft.carriedEventId ?? null,
      requested_by: draft.requestedBy,
      events: outboxRowsJson(draft.events(createdAt)),
    })),
  );
}

function outcomeOf(row: PostTransfersRow): TransferOutcome {
  const outcome = outcomes[row.outcome];
  if (outcome === undefined) throw new Error(`post_transfers returned an unknown outcome ${row.outcome}`);
  if (outcome === "committed" || outcome === "replayed") {
    return {
      outcome,
      id: row.transfer_id!,
      debitBalance: BigInt(row.debit_balance ?? 0),
      createdAt: new Date(row.created_at!),
    };
  }
  return { outcome };
}

export class LedgerStore implements Ledger {
  readonly #orm: Database;
  readonly #systemShards: number;
  readonly #batcher: Batcher<TransferDraft, TransferOutcome>;
  #nativePool: Promise<pg.Pool> | undefined;

  constructor(orm: Database, systemShards: number, limits: BatchLimits) {
    this.#orm = orm;
    this.#systemShards = systemShards;
    this.#batcher = new Batcher(
      limits,
      (drafts) => retryRaces(() => this.#postOnPool(drafts)),
      (size) => transferBatchSize.observe(size),
    );
  }

  fork(): EntityManager {
    return this.#orm.em.fork();
  }

  /** Batches applied and transfers in them since start. */
  get batchStats(): { batches: number; transfers: number } {
    return { batches: this.#batcher.batches, transfers: this.#batcher.items };
  }

  async ensureAssets(codes: readonly string[]): Promise<void> {
    await this.fork().execute(
      "insert into assets (code) select value from jsonb_array_elements_text(?::jsonb) on conflict do nothing",
      [JSON.stringify(codes)],
    );
  }

  /** Posts one transfer in the next group-committed batch. */
  submit(draft: TransferDraft): Promise<TransferOutcome> {
    return this.#batcher.submit(draft);
  }

  /** Posts transfers inside the caller's transaction, in order, each with its own outcome. */
  async postTransfers(em: EntityManager, drafts: readonly TransferDraft[]): Promise<TransferOutcome[]> {
    if (drafts.length === 0) return [];
    const rows = await em.execute<PostTransfersRow[]>(postTransfersSql.replace(/\$\d+/g, "?"), [
      batchJson(drafts, new Date()),
      this.#systemShards,
    ]);
    // post_transfers enqueues the transfers' events: their commit wakes the relay.
    markOutboxWritten(em);
    return rows.map(outcomeOf);
  }

  /** A batch on its own connection: one statement, so one implicit transaction and commit. */
  async #postOnPool(drafts: readonly TransferDraft[]): Promise<TransferOutcome[]> {
    const pool = await this.#pool();
    const { rows } = await pool.query<PostTransfersRow>({
      name: preparedStatementName(pool, "post_transfers"),
      text: postTransfersSql,
      values: [batchJson(drafts, new Date()), this.#systemShards],
    });
    // Committed with their events (post_transfers enqueues them): the relay can take them.
    outboxCommitted(this.#orm.em);
    return rows.map(outcomeOf);
  }

  #pool(): Promise<pg.Pool> {
    this.#nativePool ??= nativePool(this.#orm);
    return this.#nativePool;
  }

  async transfer(id: string, em: EntityManager = this.fork()) {
    return em.findOneOrFail(Transfer, { id });
  }

  /** Balance per asset of one owner (the sum of its shard rows). */
  async balances(owner: string): Promise<{ asset: string; amount: bigint }[]> {
    const rows = await this.fork().execute<{ asset: string; amount: string }[]>(
      "select asset, sum(balance)::bigint as amount from accounts where owner = ? group by asset order by asset",
      [owner],
    );
    return rows.map((row) => ({ asset: row.asset, amount: BigInt(row.amount) }));
  }

  /** Transfers touching `owner`, newest first, strictly before `beforeId` when given. */
  async listTransfers(owner: string, asset: string, limit: number, beforeId: string | undefined) {
    return this.fork().find(
      Transfer,
      {
        $or: [{ debitOwner: owner }, { creditOwner: owner }],
        ...(asset === "" ? {} : { asset }),
        ...(beforeId === undefined ? {} : { id: { $lt: beforeId } }),
      },
      { orderBy: { id: "desc" }, limit },
    );
  }

  /**
   * The gift debits that carried these GiftSent events: what the ledger actually took. The ids
   * go in as an array (= any), which stays an index lookup whatever the table's statistics say;
   * `in (select … from jsonb…)` became a full scan per id once the table outgrew them.
   */
  async giftDebits(
    em: EntityManager,
    eventIds: readonly string[],
  ): Promise<Map<string, { transferId: string; amount: bigint; asset: string }>> {
    const rows = await em.execute<{ carried_event_id: string; id: string; amount: string; asset: string }[]>(
      giftDebitsSql,
      [JSON.stringify(eventIds)],
    );
    return new Map(
      rows.map((row) => [
        row.carried_event_id,
        { transferId: row.id, amount: BigInt(row.amount), asset: row.asset },
      ]),
    );
  }

  /**
   * Records that gift debits are being credited; returns the ones that were not settled
   * before (a debit is credited at most once, whatever event announced it).
   */
  async settleGifts(
    em: EntityManager,
    settlements: readonly {
      giftTransferId: string;
      hostId: string;
      amount: bigint;
      host: bigint;
      platform: bigint;
    }[],
  ): Promise<Set<string>> {
    if (settlements.length === 0) return new Set();
    const rows = await em.execute<{ gift_transfer_id: string }[]>(
      `insert into gift_settlements (gift_transfer_id, host_id, amount, host_amount, platform_amount)
       select gift_transfer_id, host_id, amount, host_amount, platform_amount
       from jsonb_to_recordset(?::jsonb) as s(gift_transfer_id uuid, host_id text, amount bigint,
            host_amount bigint, platform_amount bigint)
       on conflict (gift_transfer_id) do nothing
       returning gift_transfer_id`,
      [
        JSON.stringify(
          settlements.map((s) => ({
            gift_transfer_id: s.giftTransferId,
            host_id: s.hostId,
            amount: s.amount.toString(),
            host_amount: s.host.toString(),
            platform_amount: s.platform.toString(),
          })),
        ),
      ],
    );
    return new Set(rows.map((row) => row.gift_transfer_id));
  }

  /** The hold, row-locked until the transaction ends. */
  async lockHold(em: EntityManager, id: string) {
    const hold = await em.findOne(Hold, { id }, { lockMode: LockMode.PESSIMISTIC_WRITE });
    if (hold === null) throw new LedgerError("hold_not_found", `no hold ${id}`);
    return hold;
  }

  /** The transfer posted under an idempotency key (already scoped to its caller), if any. */
  async transferByKey(em: EntityManager, idempotencyKey: string) {
    return em.findOne(Transfer, { idempotencyKey });
  }

  async holdById(em: EntityManager, id: string) {
    return em.findOne(Hold, { id });
  }

  async createHold(em: EntityManager, hold: NewHold): Promise<HoldRow> {
    const created = em.create(Hold, { ...hold, idempotencyKey: null, requestHash: null });
    await em.flush();
    return created;
  }

  /** Ids of expired pending holds, locked and skipped by other replicas. */
  async lockExpiredHolds(em: EntityManager, limit: number): Promise<string[]> {
    const rows = await em.execute<{ id: string }[]>(
      `select id from holds where status = 1 and expires_at <= now()
       order by expires_at limit ? for update skip locked`,
      [limit],
    );
    return rows.map((row) => row.id);
  }

  /** Facts `ledger audit` checks; see app/audit.ts. */
  async auditFacts() {
    const em = this.fork();
    const sums = await em.execute<{ asset: string; total: string; accounts: string }[]>(
      "select asset, sum(balance)::text as total, count(distinct owner)::text as accounts from accounts group by asset order by asset",
    );
    const negativeUsers = await em.execute<{ owner: string; asset: string; balance: string }[]>(
      "select owner, asset, balance::text from accounts where not is_system and balance < 0 limit 100",
    );
    const journalMismatches = await em.execute<
      { owner: string; asset: string; balance: string; journal: string }[]
    >(
      `with journal as (
         select owner, asset, sum(delta) as amount from (
           select debit_owner as owner, asset, -amount as delta from transfers
           union all
           select credit_owner, asset, amount from transfers) moves
         group by owner, asset),
       balances as (select owner, asset, sum(balance) as amount from accounts group by owner, asset)
       select coalesce(b.owner, j.owner) as owner, coalesce(b.asset, j.asset) as asset,
              coalesce(b.amount, 0)::text as balance, coalesce(j.amount, 0)::text as journal
       from balances b full join journal j on b.owner = j.owner and b.asset = j.asset
       where coalesce(b.amount, 0) <> coalesce(j.amount, 0)
       limit 100`,
    );
    // Gifts in transit hold exactly the coins of gift debits not yet settled, never less than 0.
    const giftsInTransit = await em.execute<{ asset: string; balance: string; unsettled: string }[]>(
      `select a.asset, a.balance::text, coalesce(g.unsettled, 0)::text as unsettled
       from (select asset, sum(balance) as balance from accounts where owner = 'system:gifts-in-transit' group by asset) a
       left join (select t.asset, sum(t.amount) as unsettled from transfers t
                  where t.kind = 5 and t.credit_owner = 'system:gifts-in-transit'
                    and not exists (select 1 from gift_settlements s where s.gift_transfer_id = t.id)
                  group by t.asset) g using (asset)`,
    );
    // What left gifts-in-transit (host credits and revenue) equals what the settlements say.
    const settlementMismatches = await em.execute<{ settled: string; credited: string }[]>(
      `select (select coalesce(sum(amount), 0) from gift_settlements)::text as settled,
              (select coalesce(sum(amount), 0) from transfers
               where debit_owner = 'system:gifts-in-transit' and kind in (4, 6))::text as credited`,
    );
    // The holds account holds exactly the pending holds.
    const holds = await em.execute<{ asset: string; balance: string; pending: string }[]>(
      `select coalesce(a.asset, h.asset) as asset, coalesce(a.balance, 0)::text as balance,
              coalesce(h.pending, 0)::text as pending
       from (select asset, sum(balance) as balance from accounts where owner = 'system:holds' group by asset) a
       full join (select asset, sum(amount) as pending from holds where status = 1 group by asset) h using (asset)`,
    );
    const unfounded = await this.#unfoundedTransfers(em);
    // Promotions hold exactly what the budgets have left, and each budget counts its credits.
    const promotions = await em.execute<{ asset: string; balance: string; remaining: string }[]>(
      `select coalesce(a.asset, b.asset) as asset, coalesce(a.balance, 0)::text as balance,
              coalesce(b.remaining, 0)::text as remaining
       from (select asset, sum(balance) as balance from accounts where owner = 'system:promotions' group by asset) a
       full join (select asset, sum(unit_amount * (credits_funded - credits_spent)) as remaining
                  from promotion_budgets group by asset) b using (asset)`,
    );
    const budgetCounts = await em.execute<{ budget_id: string; spent: string; credits: string }[]>(
      `select b.budget_id, b.credits_spent::text as spent, count(c.credit_id)::text as credits
       from promotion_budgets b left join promotion_credits c using (budget_id)
       group by b.budget_id, b.credits_spent having b.credits_spent <> count(c.credit_id) limit 100`,
    );
    return {
      sums,
      negativeUsers,
      journalMismatches,
      giftsInTransit,
      settlementMismatches,
      holds,
      unfounded,
      promotions,
      budgetCounts,
    };
  }

  /**
   * Transfers that needed a fact and have none that matches (docs/decisions/0022): a PURCHASE
   * without the card payment that paid for its coins, a REFUND without the captured hold it
   * gives back, a PROMOTION without its budget's credit, money into promotions without an
   * admin's funding.
   */
  async #unfoundedTransfers(em: EntityManager) {
    return em.execute<{ id: string; kind: string; amount: string; why: string }[]>(
      `select t.id, 'PURCHASE' as kind, t.amount::text, 'no card payment paid for these coins' as why
       from transfers t left join card_payments c on c.transfer_id = t.id
       where t.kind = 2 and (c.transfer_id is null or c.coins <> t.amount or t.credit_owner <> 'user:' || c.customer_id)
       union all
       select t.id, 'REFUND', t.amount::text, 'no captured hold of this user refunded this much'
       from transfers t left join holds h on h.refund_transfer_id = t.id
       where t.kind = 10 and (h.id is null or h.status <> 2 or h.owner <> t.credit_owner
                              or h.refunded_amount <> t.amount or h.refunded_amount > h.captured_amount)
       union all
       select t.id, 'PROMOTION', t.amount::text, 'no credit of a funded budget'
       from transfers t left join promotion_credits c on c.transfer_id = t.id
         left join promotion_budgets b on b.budget_id = c.budget_id
       where t.kind = 7 and (c.transfer_id is null or b.unit_amount <> t.amount or b.asset <> t.asset)
       union all
       select t.id, 'FUNDING', t.amount::text, 'no admin funded a promotion budget with this'
       from transfers t left join promotion_fundings f on f.transfer_id = t.id
         left join promotion_budgets b on b.budget_id = f.budget_id
       where t.credit_owner = 'system:promotions' and (f.transfer_id is null or t.amount <> f.credits * b.unit_amount)
       limit 100`,
    );
  }
}

export { Account, Hold, Transfer };
