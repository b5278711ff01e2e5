// Pure ledger rules: account names, limits, request fingerprints and the hold state machine.
// No I/O here; the store enforces the same invariants again in the database.
import { createHash } from "node:crypto";
import { HoldStatus, TransferKind } from "@ovation/proto/gen/ovation/wallet/v1/wallet_pb.ts";

export { HoldStatus, TransferKind };
export type TransferKindValue = (typeof TransferKind)[keyof typeof TransferKind];
export type HoldStatusValue = (typeof HoldStatus)[keyof typeof HoldStatus];

/** Platform accounts. Each is spread over `systemShards` rows, so none is a hot spot. */
export const systemAccounts = {
  mint: "system:mint",
  revenue: "system:revenue",
  promotions: "system:promotions",
  giftsInTransit: "system:gifts-in-transit",
  holds: "system:holds",
} as const;

export const ledgerLimits = {
  amountMax: 1_000_000_000_000_000n,
  referenceMaxLength: 128,
  metadataEntriesMax: 16,
  metadataTextMaxLength: 128,
  idempotencyKeyMaxLength: 128,
  eventPayloadMaxBytes: 64 * 1024,
  holdTtlDefaultSeconds: 900,
  holdTtlMaxSeconds: 86_400,
  pageSizeDefault: 20,
  pageSizeMax: 100,
  /** A bearer token is well under this; anything longer is not one. */
  consentTokenMaxLength: 8_192,
  budgetCreditsMax: 1_000_000n,
} as const;

export const ownerPattern = /^(user|system):[A-Za-z0-9_.@-]{1,128}$/;
export const userIdPattern = /^[A-Za-z0-9_.@-]{1,128}$/;
export const assetPattern = /^[A-Z][A-Z0-9]{1,15}$/;

export const userOwner = (userId: string) => `user:${userId}`;
export const isUserOwner = (owner: string) => owner.startsWith("user:");

export interface TransferFields {
  debitOwner: string;
  creditOwner: string;
  asset: string;
  amount: bigint;
  kind: number;
  reference: string;
  metadata: Record<string, string>;
  holdId?: string | undefined;
  event?: { subject: string; type: string; payload: Uint8Array } | undefined;
}

/**
 * Fingerprint of what a transfer request asks for, to tell a retry (same fingerprint) from a
 * reused idempotency key (different fingerprint). The event id is left out on purpose: a
 * retry may carry a fresh one, and the first event was already published.
 */
export function requestFingerprint(fields: TransferFields): Buffer {
  const metadata = Object.keys(fields.metadata)
    .sort()
    .map((key) => [key, fields.metadata[key]]);
  const canonical = JSON.stringify([
    fields.debitOwner,
    fields.creditOwner,
    fields.asset,
    fields.amount.toString(),
    fields.kind,
    fields.reference,
    metadata,
    fields.holdId ?? "",
    fields.event?.subject ?? "",
    fields.event?.type ?? "",
    fields.event ? Buffer.from(fields.event.payload).toString("base64") : "",
  ]);
  return createHash("sha256").update(canonical).digest();
}

export type HoldAction = "capture" | "void" | "expire";

const holdStatusNames: Partial<Record<HoldStatusValue, string>> = {
  [HoldStatus.PENDING]: "pending",
  [HoldStatus.CAPTURED]: "captured",
  [HoldStatus.VOIDED]: "voided",
  [HoldStatus.EXPIRED]: "expired",
};

const holdTargets: Record<HoldAction, HoldStatusValue> = {
  capture: HoldStatus.CAPTURED,
  void: HoldStatus.VOIDED,
  expire: HoldStatus.EXPIRED,
};

/**
 * Next status of a hold, or an explanation why the action is refused. Only PENDING moves;
 * repeating the action that already happened is a no-op ("already"), so retries are safe.
 */
export function holdTransition(
  status: HoldStatusValue,
  action: HoldAction,
): { next: HoldStatusValue } | { already: true } | { refused: string; status: string } {
  const target = holdTargets[action];
  if (status === HoldStatus.PENDING) return { next: target };
  if (status === target) return { already: true };
  const name = holdStatusNames[status] ?? "unknown";
  return { refused: `hold is ${name}, cannot ${action}`, status: name };
}

/** Splits a captured hold: what goes to the credit account and what returns to the owner. */
export function splitCapture(held: bigint, requested: bigint): { captured: bigint; released: bigint } {
  const captured = requested === 0n ? held : requested;
  if (captured <= 0n || captured > held) throw new RangeError(`capture amount must be 1..${held}`);
  return { captured, released: held - captured };
}
