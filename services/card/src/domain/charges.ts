// Pure rules of the card processor simulator: which charges it declines, how a request is
// fingerprinted for idempotency, what a refund may give back, and its errors. No I/O.
import { createHash } from "node:crypto";

export const cardLimits = {
  amountMax: 1_000_000_000_000_000n,
  referenceMaxLength: 128,
  metadataEntriesMax: 16,
  metadataTextMaxLength: 128,
} as const;

export const cardErrorCodes = {
  idempotencyConflict: "idempotency_conflict",
  chargeNotFound: "charge_not_found",
  notRefundable: "not_refundable",
  alreadyRefunded: "already_refunded",
  refundTooLarge: "refund_too_large",
  merchantNotAllowed: "merchant_not_allowed",
} as const;

export type CardErrorCode = (typeof cardErrorCodes)[keyof typeof cardErrorCodes];

export class CardError extends Error {
  override name = "CardError";
  readonly code: CardErrorCode;

  constructor(code: CardErrorCode, message: string) {
    super(message);
    this.code = code;
  }
}

export interface ChargeFields {
  reference: string;
  customerId: string;
  asset: string;
  amount: bigint;
  metadata: Record<string, string>;
}

/**
 * Whether the simulator declines a charge: a roll from the seed, the merchant and the
 * idempotency key only, so a retried charge (or one asked again after a restart) gets the same
 * answer, and a seed gives reproducible soaks.
 */
export function isDeclined(
  seed: string,
  merchant: string,
  idempotencyKey: string,
  failureRate: number,
): boolean {
  const roll =
    createHash("sha256").update(`${seed}:${merchant}:${idempotencyKey}`).digest().readUInt32BE(0) / 2 ** 32;
  return roll < failureRate;
}

/** What a charge request asks for, to tell a retry from a reused key. */
export function chargeFingerprint(fields: ChargeFields): Buffer {
  const metadata = Object.keys(fields.metadata)
    .sort()
    .map((key) => [key, fields.metadata[key]]);
  return createHash("sha256")
    .update(
      JSON.stringify([fields.reference, fields.customerId, fields.asset, fields.amount.toString(), metadata]),
    )
    .digest();
}

export interface RefundableCharge {
  succeeded: boolean;
  asset: string;
  amount: bigint;
  refund: { key: string; amount: bigint } | null;
}

/**
 * Whether `request` may refund `charge`: "replay" when it is the retry of the refund already
 * made, "refund" when it may go ahead; otherwise a CardError. A charge is refunded once, at most
 * its amount, in its own currency.
 */
export function refundDecision(
  charge: RefundableCharge,
  request: { key: string; asset: string; amount: bigint },
): "refund" | "replay" {
  if (!charge.succeeded)
    throw new CardError(cardErrorCodes.notRefundable, "only a succeeded charge can be refunded");
  if (charge.refund !== null) {
    if (charge.refund.key === request.key && charge.refund.amount === request.amount) return "replay";
    throw new CardError(cardErrorCodes.alreadyRefunded, "the charge was refunded already");
  }
  if (request.asset !== charge.asset)
    throw new CardError(
      cardErrorCodes.refundTooLarge,
      `the charge was in ${charge.asset}, not ${request.asset}`,
    );
  if (request.amount > charge.amount)
    throw new CardError(
      cardErrorCodes.refundTooLarge,
      `a refund of ${request.amount} is more than the ${charge.amount} charged`,
    );
  return "refund";
}
