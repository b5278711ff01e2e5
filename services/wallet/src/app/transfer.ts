// Use case: move money. Checks the caller's policy, builds the journal record and the
// wallet's own event, fingerprints the request for idempotency, and posts it: through the
// group-commit batcher, or inside the caller's transaction when one is given.
import type { EntityManager } from "@ovation/db";
import type { OutboxEvent } from "@ovation/events";
import { v7 as uuidv7 } from "uuid";
import { LedgerError } from "../domain/errors.ts";
import { requestFingerprint, type TransferFields } from "../domain/ledger.ts";
import { type Caller, callerName, refuseEvent, refuseMovement } from "../domain/policy.ts";
import {
  refuseCarriedEvent,
  stampCommitTime,
  type TransferRecord,
  transferCommittedEvent,
} from "./messages.ts";
import type { Ledger, TransferDraft, TransferOutcome } from "./ports.ts";

export interface TransferCommand extends Omit<TransferFields, "event"> {
  caller: Caller;
  /** Already scoped to the caller, so two callers can never collide. */
  idempotencyKey: string;
  /** The caller's event, published atomically with the transfer. */
  event?: OutboxEvent | undefined;
  /** Whose coins a capture from system:holds spends (the hold's owner), for its credit event. */
  payer?: string | undefined;
  /** The user whose own (verified) token came with the request, if any: their consent. */
  consentOf?: string | undefined;
}

export interface TransferResult {
  transfer: TransferRecord;
  debitBalance: bigint;
  replayed: boolean;
}

/** Refuses what the caller's policy does not allow; throws LedgerError(permission_denied). */
export function authorizeTransfer(command: TransferCommand): void {
  const refusal =
    refuseMovement(command.caller, command) ??
    (command.event === undefined
      ? undefined
      : (refuseEvent(command.caller, command.event.subject) ?? refuseCarriedEvent(command, command.event)));
  if (refusal !== undefined) throw new LedgerError("permission_denied", refusal);
}

/** The draft the store writes for `command`, with a fresh id. */
export function transferDraft(command: TransferCommand, fingerprintFields?: TransferFields): TransferDraft {
  const id = uuidv7();
  return {
    id,
    debitOwner: command.debitOwner,
    creditOwner: command.creditOwner,
    asset: command.asset,
    amount: command.amount,
    kind: command.kind,
    reference: command.reference,
    metadata: command.metadata,
    holdId: command.holdId,
    idempotencyKey: command.idempotencyKey,
    fingerprint: requestFingerprint(fingerprintFields ?? { ...command, event: command.event }),
    requestedBy: callerName(command.caller),
    carriedEventId: command.event?.eventId,
    // The transfer's own event travels in the trace of the event it carries, if any.
    events: (createdAt) => [
      {
        ...transferCommittedEvent({ ...command, id, createdAt }, command.payer),
        headers: command.event?.headers,
      },
      ...(command.event === undefined ? [] : [stampCommitTime(command.event, createdAt)]),
    ],
  };
}

export async function transfer(
  store: Ledger,
  command: TransferCommand,
  em?: EntityManager,
): Promise<TransferResult> {
  authorizeTransfer(command);
  const draft = transferDraft(command);
  const outcome = em === undefined ? await store.submit(draft) : (await store.postTransfers(em, [draft]))[0]!;
  return resultOf(store, draft, outcome, em);
}

/**
 * Posts several transfers inside the caller's transaction in one post_transfers call, so the
 * whole set takes its locks in one order and touches each system account once.
 */
export async function transferAll(
  store: Ledger,
  commands: readonly TransferCommand[],
  em: EntityManager,
): Promise<TransferResult[]> {
  for (const command of commands) authorizeTransfer(command);
  const drafts = commands.map((command) => transferDraft(command));
  const outcomes = await store.postTransfers(em, drafts);
  const results: TransferResult[] = [];
  for (const [index, outcome] of outcomes.entries())
    results.push(await resultOf(store, drafts[index]!, outcome, em));
  return results;
}

/** The result of a posted draft; refusals become LedgerErrors. */
export async function resultOf(
  store: Ledger,
  draft: TransferDraft,
  outcome: TransferOutcome,
  em?: EntityManager,
): Promise<TransferResult> {
  switch (outcome.outcome) {
    case "committed":
      return {
        transfer: { ...draft, holdId: draft.holdId ?? null, createdAt: outcome.createdAt, id: outcome.id },
        debitBalance: outcome.debitBalance,
        replayed: false,
      };
    case "replayed":
      return {
        transfer: await store.transfer(outcome.id, em),
        debitBalance: outcome.debitBalance,
        replayed: true,
      };
    case "insufficient_funds":
      throw new LedgerError("insufficient_funds", "insufficient funds");
    case "idempotency_conflict":
      throw new LedgerError("idempotency_conflict", "idempotency key reused with a different request");
    case "unknown_asset":
      throw new LedgerError("unknown_asset", "unknown asset");
    case "duplicate_event":
      // The event exists already (ALREADY_EXISTS), under another key: a retry must reuse the
      // key the event was first sent with.
      throw new LedgerError(
        "idempotency_conflict",
        `event ${draft.carriedEventId} was carried by another transfer already`,
      );
  }
}
