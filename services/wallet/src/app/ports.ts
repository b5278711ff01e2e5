// What the wallet's use cases need from its database, declared here so that they depend on
// these interfaces: store/ledger-store.ts and store/fact-store.ts implement them, and main.ts
// wires the concrete classes. The dependency points inward: the stores import these types,
// never the other way round.
//
// The unit of work is MikroORM's EntityManager (`em`): a use case opens a transaction on
// `fork()`, and methods that take `em` work inside it. Hold rows handed out by `lockHold`,
// `holdById` and `createHold` are tracked by that unit of work: a use case changes their fields
// and `em.flush()` writes the changes, in the transaction.
import type { EntityManager } from "@ovation/db";
import type { OutboxEvent } from "@ovation/events";
import type { TransferFields } from "../domain/ledger.ts";
import type { HoldRecord, TransferRecord } from "./messages.ts";

// ---- The ledger ---------------------------------------------------------------------------

/** A transfer as the ledger writes it; its events are built once the batch has its time. */
export interface TransferDraft extends Omit<TransferFields, "event"> {
  id: string;
  idempotencyKey: string;
  fingerprint: Buffer;
  /** Who asked for it, for the journal: "service:gift", "admin:root", "wallet". */
  requestedBy: string;
  /** Id of the caller's event this transfer carries, if any. */
  carriedEventId?: string | undefined;
  /** The events to publish with it, given the time the transfer is written. */
  events: (createdAt: Date) => readonly OutboxEvent[];
}

export type TransferOutcome =
  | { outcome: "committed" | "replayed"; id: string; debitBalance: bigint; createdAt: Date }
  | { outcome: "insufficient_funds" | "idempotency_conflict" | "unknown_asset" | "duplicate_event" };

/** A hold as stored, with what settling it changes. */
export interface HoldRow extends HoldRecord {
  refundedAmount: bigint;
  refundTransferId?: string | null | undefined;
  updatedAt: Date;
}

/** A new hold, as the reserve writes it. */
export type NewHold = Omit<HoldRow, "refundTransferId"> & { refundTransferId: null };

/** What `ledger audit` checks, as the database reports it (amounts as text). */
export interface AuditFacts {
  sums: { asset: string; total: string; accounts: string }[];
  negativeUsers: { owner: string; asset: string; balance: string }[];
  journalMismatches: { owner: string; asset: string; balance: string; journal: string }[];
  giftsInTransit: { asset: string; balance: string; unsettled: string }[];
  settlementMismatches: { settled: string; credited: string }[];
  holds: { asset: string; balance: string; pending: string }[];
  unfounded: { id: string; kind: string; amount: string; why: string }[];
  promotions: { asset: string; balance: string; remaining: string }[];
  budgetCounts: { budget_id: string; spent: string; credits: string }[];
}

/** Accounts, transfers and holds: the double-entry ledger. */
export interface Ledger {
  /** A new unit of work; `transactional` on it runs a transaction. */
  fork(): EntityManager;
  /** Posts one transfer in the next group-committed batch. */
  submit(draft: TransferDraft): Promise<TransferOutcome>;
  /** Posts transfers inside the caller's transaction, in order, each with its own outcome. */
  postTransfers(em: EntityManager, drafts: readonly TransferDraft[]): Promise<TransferOutcome[]>;
  transfer(id: string, em?: EntityManager): Promise<TransferRecord>;
  /** The transfer posted under an idempotency key (already scoped to its caller), if any. */
  transferByKey(em: EntityManager, idempotencyKey: string): Promise<TransferRecord | null>;
  /** Balance per asset of one owner (the sum of its shard rows). */
  balances(owner: string): Promise<{ asset: string; amount: bigint }[]>;
  /** Transfers touching `owner`, newest first, strictly before `beforeId` when given. */
  listTransfers(
    owner: string,
    asset: string,
    limit: number,
    beforeId: string | undefined,
  ): Promise<TransferRecord[]>;
  /** The hold, row-locked until the transaction ends; LedgerError(hold_not_found) when there is none. */
  lockHold(em: EntityManager, id: string): Promise<HoldRow>;
  holdById(em: EntityManager, id: string): Promise<HoldRow | null>;
  /** Writes a new hold in the caller's transaction. */
  createHold(em: EntityManager, hold: NewHold): Promise<HoldRow>;
  /** Ids of expired pending holds, locked and skipped by other replicas. */
  lockExpiredHolds(em: EntityManager, limit: number): Promise<string[]>;
  auditFacts(): Promise<AuditFacts>;
}

// ---- The facts money rests on -------------------------------------------------------------

/** A card payment whose coins were minted (a PURCHASE's fact). */
export interface CardPaymentRow {
  chargeId: string;
  reference: string;
  customerId: string;
  asset: string;
  paid: bigint;
  coins: bigint;
  transferId: string;
}

/** A promotion budget: credits funded by an admin, and how many were paid. */
export interface BudgetRow {
  budgetId: string;
  asset: string;
  unitAmount: bigint;
  creditsFunded: bigint;
  creditsSpent: bigint;
  createdAt: Date;
}

/** Card payments, promotion budgets and their credits. Every method works in the caller's transaction. */
export interface Facts {
  /** The card payments already minted among `chargeIds`. */
  mintedCharges(em: EntityManager, chargeIds: readonly string[]): Promise<Set<string>>;
  recordCardPayments(em: EntityManager, payments: readonly CardPaymentRow[]): Promise<void>;
  budget(em: EntityManager, budgetId: string): Promise<BudgetRow | null>;
  /** The budgets among `budgetIds`, locked in id order (the one order every writer uses). */
  lockBudgets(em: EntityManager, budgetIds: readonly string[]): Promise<Map<string, BudgetRow>>;
  /** Adds funded credits, creating the budget on its first funding; returns it locked. */
  fund(
    em: EntityManager,
    funding: {
      budgetId: string;
      asset: string;
      unitAmount: bigint;
      credits: bigint;
      transferId: string;
      by: string;
    },
  ): Promise<BudgetRow>;
  /** The credits among `creditIds` already paid (by any event that named them). */
  paidCredits(em: EntityManager, creditIds: readonly string[]): Promise<Set<string>>;
  /** Records paid credits and counts them against their budgets. */
  recordCredits(
    em: EntityManager,
    credits: readonly { creditId: string; budgetId: string; transferId: string }[],
  ): Promise<void>;
}
