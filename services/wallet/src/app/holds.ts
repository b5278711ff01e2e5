// Use cases for two-phase transfers. A hold moves money from the owner to system:holds;
// capture moves it on to the credit account (any remainder back), void and expiry move it
// back. Expiry is a durable timer (@ovation/jobs) scheduled in the reserve's own transaction,
// with a minutely sweep behind it for any hold whose timer is missing. Each runs in one
// transaction with the hold row locked, so a hold settles once, and
// every movement goes through post_transfers like any other transfer. A reserve is idempotent
// through its own transfer: the caller's key is the reserve transfer's key, and a retry finds
// the hold through that transfer.
import type { EntityManager } from "@ovation/db";
import { retryRaces } from "@ovation/db";
import type { OutboxEvent } from "@ovation/events";
import { cancelJob, scheduleJob } from "@ovation/jobs";
import { v7 as uuidv7 } from "uuid";
import { LedgerError } from "../domain/errors.ts";
import {
  type HoldAction,
  HoldStatus,
  holdTransition,
  requestFingerprint,
  splitCapture,
  systemAccounts,
  TransferKind,
  type TransferKindValue,
} from "../domain/ledger.ts";
import { type Caller, refuseHolds } from "../domain/policy.ts";
import type { HoldRecord, TransferRecord } from "./messages.ts";
import type { HoldRow, Ledger } from "./ports.ts";
import { authorizeTransfer, resultOf, type TransferCommand, transferAll, transferDraft } from "./transfer.ts";

const wallet: Caller = { kind: "wallet" };

/** The wallet's timers: one job per hold at its expiry, and a sweep behind them. */
export const holdJobs = {
  expireTask: "expire-hold",
  sweepTask: "expire-due-holds",
  /** Every minute: releases expired holds whose own job is missing (held before timers). */
  sweepCrontab: "* * * * * expire-due-holds",
} as const;

const holdJobKey = (holdId: string) => `wallet:hold:${holdId}`;

function authorizeHolds(caller: Caller, reserve?: { owner: string; consentOf: string | undefined }): void {
  const refusal = refuseHolds(caller, reserve);
  if (refusal !== undefined) throw new LedgerError("permission_denied", refusal);
}

export interface ReserveCommand {
  caller: Caller;
  owner: string;
  asset: string;
  amount: bigint;
  reference: string;
  ttlSeconds: number;
  /** Already scoped to the caller. */
  idempotencyKey: string;
  /** The user whose own (verified) token came with the request, if any. */
  consentOf?: string | undefined;
}

export async function reserveHold(store: Ledger, command: ReserveCommand): Promise<HoldRecord> {
  authorizeHolds(command.caller, { owner: command.owner, consentOf: command.consentOf });
  const holdId = uuidv7();
  const reserve: TransferCommand = {
    caller: wallet,
    debitOwner: command.owner,
    creditOwner: systemAccounts.holds,
    asset: command.asset,
    amount: command.amount,
    kind: TransferKind.HOLD,
    reference: command.reference,
    metadata: {},
    holdId,
    idempotencyKey: command.idempotencyKey,
  };
  authorizeTransfer(reserve);
  // What the caller asked for, without the hold id this attempt made up: a retry must match.
  const fingerprint = { ...reserve, holdId: undefined, metadata: { ttlSeconds: String(command.ttlSeconds) } };
  const draft = { ...transferDraft(reserve), fingerprint: requestFingerprint(fingerprint) };
  const placed = await retryRaces(() =>
    store.fork().transactional(async (em) => {
      const now = new Date();
      const hold = await store.createHold(em, {
        id: holdId,
        owner: command.owner,
        asset: command.asset,
        amount: command.amount,
        status: HoldStatus.PENDING,
        reference: command.reference,
        capturedAmount: 0n,
        refundedAmount: 0n,
        refundTransferId: null,
        expiresAt: new Date(now.getTime() + command.ttlSeconds * 1000),
        createdAt: now,
        updatedAt: now,
      });
      await scheduleJob(em, {
        task: holdJobs.expireTask,
        payload: { holdId },
        runAt: hold.expiresAt,
        key: holdJobKey(holdId),
      });
      // The money moves last, so the account rows stay locked for this statement and the commit.
      const [outcome] = await store.postTransfers(em, [draft]);
      const posted = await resultOf(store, draft, outcome!, em);
      // A retry of an earlier reserve: its hold stands, and this attempt's is rolled back.
      if (posted.replayed) throw new ReplayedReserve(posted.transfer.holdId ?? "");
      return hold;
    }),
  ).catch((error: unknown) => {
    if (error instanceof ReplayedReserve) return error;
    throw error;
  });
  if (!(placed instanceof ReplayedReserve)) return placed;
  const earlier = await store.holdById(store.fork(), placed.holdId);
  if (earlier === null) throw new Error(`reserve transfer of hold ${placed.holdId} has no hold`);
  return earlier;
}

/** Rolls back a reserve whose transfer was made by an earlier attempt, naming that one's hold. */
class ReplayedReserve extends Error {
  override name = "ReplayedReserve";
  readonly holdId: string;

  constructor(holdId: string) {
    super(`the reserve was made before, for hold ${holdId}`);
    this.holdId = holdId;
  }
}

/** The expiry timer of one hold: releases it if it is still pending and past its time. */
export async function expireHold(store: Ledger, holdId: string): Promise<void> {
  await retryRaces(() =>
    store.fork().transactional(async (em) => {
      const hold = await store.holdById(em, holdId);
      if (hold === null || hold.status !== HoldStatus.PENDING || hold.expiresAt.getTime() > Date.now())
        return;
      await release(store, em, await store.lockHold(em, holdId), "expire");
    }),
  );
}

export interface CaptureCommand {
  caller: Caller;
  holdId: string;
  creditOwner: string;
  amount: bigint;
  kind: TransferKindValue;
  event?: OutboxEvent | undefined;
}

export async function captureHold(store: Ledger, command: CaptureCommand): Promise<HoldRecord> {
  authorizeHolds(command.caller);
  return retryRaces(() =>
    store.fork().transactional(async (em) => {
      const hold = await store.lockHold(em, command.holdId);
      // Its timer may not have released it yet, but an expired hold is no longer the buyer's promise.
      if (hold.status === HoldStatus.PENDING && hold.expiresAt.getTime() <= Date.now()) {
        throw new LedgerError("hold_expired", `hold ${hold.id} expired at ${hold.expiresAt.toISOString()}`);
      }
      if (!settle(hold, "capture")) return hold;
      let split: { captured: bigint; released: bigint };
      try {
        split = splitCapture(hold.amount, command.amount);
      } catch (error) {
        throw new LedgerError("invalid_capture", (error as Error).message);
      }
      const moves = [
        fromHolds(
          hold,
          command.caller,
          command.creditOwner,
          split.captured,
          command.kind,
          "capture",
          command.event,
        ),
      ];
      if (split.released > 0n) {
        moves.push(fromHolds(hold, wallet, hold.owner, split.released, TransferKind.RELEASE, "release"));
      }
      hold.capturedAmount = split.captured;
      await em.flush();
      await cancelJob(em, holdJobKey(hold.id));
      // The money moves last: the account rows stay locked for this statement and the commit.
      await transferAll(store, moves, em);
      return hold;
    }),
  );
}

export interface RefundCommand {
  caller: Caller;
  holdId: string;
  /** 0: all of the capture. */
  amount: bigint;
  /** Already scoped to the caller. */
  idempotencyKey: string;
}

/**
 * Gives a captured hold back to its owner: system:revenue → owner as a REFUND with the hold's
 * reference, at most the captured amount, once per hold. The wallet makes the movement itself
 * (policy: "wallet") against the fact it checks here, the capture; a retry with the same key
 * answers with the first refund, any other second refund is refused.
 */
export async function refundHold(
  store: Ledger,
  command: RefundCommand,
): Promise<{ transfer: TransferRecord; hold: HoldRecord }> {
  authorizeHolds(command.caller);
  return retryRaces(() =>
    store.fork().transactional(async (em) => {
      const hold = await store.lockHold(em, command.holdId);
      if (hold.status !== HoldStatus.CAPTURED)
        throw new LedgerError("not_refundable", `hold ${hold.id} was not captured: nothing to refund`);
      if (hold.refundTransferId !== null && hold.refundTransferId !== undefined) {
        const earlier = await store.transferByKey(em, command.idempotencyKey);
        if (earlier?.id !== hold.refundTransferId)
          throw new LedgerError("already_refunded", `hold ${hold.id} was refunded already`);
        return { transfer: earlier, hold };
      }
      const amount = command.amount === 0n ? hold.capturedAmount : command.amount;
      if (amount > hold.capturedAmount)
        throw new LedgerError(
          "refund_too_large",
          `a refund of ${amount} is more than the ${hold.capturedAmount} captured`,
        );
      const [posted] = await transferAll(
        store,
        [
          {
            caller: wallet,
            debitOwner: systemAccounts.revenue,
            creditOwner: hold.owner,
            asset: hold.asset,
            amount,
            kind: TransferKind.REFUND,
            reference: hold.reference,
            metadata: { hold: hold.id },
            holdId: hold.id,
            idempotencyKey: command.idempotencyKey,
          },
        ],
        em,
      );
      hold.refundedAmount = amount;
      hold.refundTransferId = posted!.transfer.id;
      hold.updatedAt = new Date();
      await em.flush();
      return { transfer: posted!.transfer, hold };
    }),
  );
}

export async function voidHold(store: Ledger, caller: Caller, holdId: string): Promise<HoldRecord> {
  authorizeHolds(caller);
  return retryRaces(() =>
    store.fork().transactional(async (em) => {
      const hold = await store.lockHold(em, holdId);
      await cancelJob(em, holdJobKey(hold.id));
      return release(store, em, hold, "void");
    }),
  );
}

const expiryBatchMax = 100;

/** Releases pending holds past their expiry; returns how many. Safe with several replicas. */
export async function expireDueHolds(store: Ledger): Promise<number> {
  return retryRaces(() =>
    store.fork().transactional(async (em) => {
      const ids = await store.lockExpiredHolds(em, expiryBatchMax);
      for (const id of ids) await release(store, em, await store.lockHold(em, id), "expire");
      return ids.length;
    }),
  );
}

/** Releases a locked hold; the money moves last, after the hold's own change. */
async function release(store: Ledger, em: EntityManager, hold: HoldRow, action: "void" | "expire") {
  if (settle(hold, action)) {
    await em.flush();
    await transferAll(
      store,
      [fromHolds(hold, wallet, hold.owner, hold.amount, TransferKind.RELEASE, "release")],
      em,
    );
  }
  return hold;
}

/** Applies the state transition; false when the hold was already in the target state. */
function settle(hold: HoldRecord & { updatedAt?: Date }, action: HoldAction): boolean {
  const step = holdTransition(hold.status as Parameters<typeof holdTransition>[0], action);
  // The hold's state travels with the refusal: a caller that lost the answer to its own capture
  // learns from a void that the capture happened.
  if ("refused" in step)
    throw new LedgerError("hold_not_pending", step.refused, { details: { status: step.status } });
  if ("already" in step) return false;
  hold.status = step.next;
  hold.updatedAt = new Date();
  return true;
}

/** A movement out of system:holds for this hold; its key is the hold and the step. */
function fromHolds(
  hold: HoldRecord,
  caller: Caller,
  creditOwner: string,
  amount: bigint,
  kind: TransferKindValue,
  step: "capture" | "release",
  event?: OutboxEvent,
): TransferCommand {
  return {
    caller,
    debitOwner: systemAccounts.holds,
    creditOwner,
    asset: hold.asset,
    amount,
    kind,
    reference: hold.reference,
    metadata: {},
    holdId: hold.id,
    idempotencyKey: `hold:${hold.id}:${step}`,
    event,
    payer: hold.owner,
  };
}

/** The hold timers a wallet replica runs: each hold's expiry, and the sweep behind them. */
export function holdTimers(store: Ledger, logger: { info(data: object, message: string): void }) {
  return {
    crontab: holdJobs.sweepCrontab,
    tasks: {
      [holdJobs.expireTask]: (payload: unknown) => expireHold(store, (payload as { holdId: string }).holdId),
      [holdJobs.sweepTask]: async () => {
        const expired = await expireDueHolds(store);
        if (expired > 0) logger.info({ expired }, "released expired holds the sweep found");
      },
    },
  };
}
