// Use case: move money. Builds the journal record and the wallet's own event, fingerprints the
// request for idempotency, and posts it in one call (with the caller's event, if any).
import type { EntityManager } from "@ovation/db";
import type { OutboxEvent } from "@ovation/events";
import { v7 as uuidv7 } from "uuid";
import { requestFingerprint, type TransferFields } from "../domain/ledger.ts";
import type { LedgerStore } from "../store/ledger-store.ts";
import { type TransferRecord, transferCommittedEvent } from "./messages.ts";

export interface TransferCommand extends Omit<TransferFields, "event"> {
  /** Already scoped to the caller, so two callers can never collide. */
  idempotencyKey: string;
  /** The caller's event, published atomically with the transfer. */
  event?: OutboxEvent | undefined;
}

export interface TransferResult {
  transfer: TransferRecord;
  debitBalance: bigint;
  replayed: boolean;
}

export async function transfer(
  store: LedgerStore,
  command: TransferCommand,
  em?: EntityManager,
): Promise<TransferResult> {
  const record: TransferRecord = {
    id: uuidv7(),
    debitOwner: command.debitOwner,
    creditOwner: command.creditOwner,
    asset: command.asset,
    amount: command.amount,
    kind: command.kind,
    reference: command.reference,
    metadata: command.metadata,
    holdId: command.holdId,
    createdAt: new Date(),
  };
  const events = [transferCommittedEvent(record), ...(command.event ? [command.event] : [])];
  const posted = await store.postTransfer(
    {
      ...command,
      id: record.id,
      createdAt: record.createdAt,
      fingerprint: requestFingerprint({ ...command, event: command.event }),
      events,
    },
    em,
  );
  if (!posted.replayed) return { transfer: record, debitBalance: posted.debitBalance, replayed: false };
  const first = await store.transfer(posted.id);
  return { transfer: first, debitBalance: posted.debitBalance, replayed: true };
}
