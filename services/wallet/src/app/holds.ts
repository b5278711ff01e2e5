// Use cases for two-phase transfers. A hold moves money from the owner to system:holds;
// capture moves it on to the credit account (any remainder back), void and expiry move it
// back. Each runs in one transaction with the hold row locked, so a hold settles once.
import { UniqueConstraintViolationException } from "@mikro-orm/core";
import type { EntityManager } from "@ovation/db";
import type { OutboxEvent } from "@ovation/events";
import { v7 as uuidv7 } from "uuid";
import { LedgerError, ledgerErrorCodes } from "../domain/errors.ts";
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
import { Hold, type LedgerStore } from "../store/ledger-store.ts";
import type { HoldRecord } from "./messages.ts";
import { transfer } from "./transfer.ts";

export interface ReserveCommand {
  owner: string;
  asset: string;
  amount: bigint;
  reference: string;
  ttlSeconds: number;
  idempotencyKey: string;
}

export async function reserveHold(store: LedgerStore, command: ReserveCommand): Promise<HoldRecord> {
  // The reserve is a transfer from the owner into the holds account.
  const reserve = {
    debitOwner: command.owner,
    creditOwner: systemAccounts.holds,
    asset: command.asset,
    amount: command.amount,
    kind: TransferKind.HOLD,
    reference: command.reference,
  };
  const fingerprint = requestFingerprint({
    ...reserve,
    metadata: { ttlSeconds: String(command.ttlSeconds) },
  });
  try {
    return await store.fork().transactional(async (em) => {
      const existing = await store.holdByKey(em, command.idempotencyKey);
      if (existing !== null) return sameRequest(existing, fingerprint);
      const now = new Date();
      const hold = em.create(Hold, {
        id: uuidv7(),
        owner: command.owner,
        asset: command.asset,
        amount: command.amount,
        status: HoldStatus.PENDING,
        reference: command.reference,
        capturedAmount: 0n,
        idempotencyKey: command.idempotencyKey,
        requestHash: fingerprint,
        expiresAt: new Date(now.getTime() + command.ttlSeconds * 1000),
        createdAt: now,
        updatedAt: now,
      });
      await em.flush();
      await transfer(
        store,
        { ...reserve, metadata: {}, holdId: hold.id, idempotencyKey: `hold:${hold.id}:reserve` },
        em,
      );
      return hold;
    });
  } catch (error) {
    // A concurrent request with the same key won the unique index: answer with its hold.
    if (!(error instanceof UniqueConstraintViolationException)) throw error;
    const existing = await store.holdByKey(store.fork(), command.idempotencyKey);
    if (existing === null) throw error;
    return sameRequest(existing, fingerprint);
  }
}

function sameRequest(existing: HoldRecord & { requestHash: Uint8Array }, fingerprint: Buffer): HoldRecord {
  if (!Buffer.from(existing.requestHash).equals(fingerprint)) {
    throw new LedgerError(
      ledgerErrorCodes.idempotencyConflict,
      "idempotency key reused with a different request",
    );
  }
  return existing;
}

export interface CaptureCommand {
  holdId: string;
  creditOwner: string;
  amount: bigint;
  kind: TransferKindValue;
  event?: OutboxEvent | undefined;
}

export async function captureHold(store: LedgerStore, command: CaptureCommand): Promise<HoldRecord> {
  return store.fork().transactional(async (em) => {
    const hold = await store.lockHold(em, command.holdId);
    if (!settle(hold, "capture")) return hold;
    let split: { captured: bigint; released: bigint };
    try {
      split = splitCapture(hold.amount, command.amount);
    } catch (error) {
      throw new LedgerError(ledgerErrorCodes.invalidCapture, (error as Error).message);
    }
    await moveFromHolds(
      store,
      em,
      hold,
      command.creditOwner,
      split.captured,
      command.kind,
      "capture",
      command.event,
    );
    if (split.released > 0n) {
      await moveFromHolds(store, em, hold, hold.owner, split.released, TransferKind.RELEASE, "release");
    }
    hold.capturedAmount = split.captured;
    await em.flush();
    return hold;
  });
}

export async function voidHold(store: LedgerStore, holdId: string): Promise<HoldRecord> {
  return store
    .fork()
    .transactional(async (em) => release(store, em, await store.lockHold(em, holdId), "void"));
}

const expiryBatchMax = 100;

/** Releases pending holds past their expiry; returns how many. Safe with several replicas. */
export async function expireDueHolds(store: LedgerStore): Promise<number> {
  return store.fork().transactional(async (em) => {
    const ids = await store.lockExpiredHolds(em, expiryBatchMax);
    for (const id of ids) await release(store, em, await store.lockHold(em, id), "expire");
    return ids.length;
  });
}

async function release(store: LedgerStore, em: EntityManager, hold: HoldRecord, action: "void" | "expire") {
  if (settle(hold, action)) {
    await moveFromHolds(store, em, hold, hold.owner, hold.amount, TransferKind.RELEASE, "release");
    await em.flush();
  }
  return hold;
}

/** Applies the state transition; false when the hold was already in the target state. */
function settle(hold: HoldRecord & { updatedAt?: Date }, action: HoldAction): boolean {
  const step = holdTransition(hold.status as Parameters<typeof holdTransition>[0], action);
  if ("refused" in step) throw new LedgerError(ledgerErrorCodes.holdNotPending, step.refused);
  if ("already" in step) return false;
  hold.status = step.next;
  hold.updatedAt = new Date();
  return true;
}

async function moveFromHolds(
  store: LedgerStore,
  em: EntityManager,
  hold: HoldRecord,
  creditOwner: string,
  amount: bigint,
  kind: TransferKindValue,
  step: "capture" | "release",
  event?: OutboxEvent,
) {
  await transfer(
    store,
    {
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
    },
    em,
  );
}
