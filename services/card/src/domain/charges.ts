// Pure rules of the card processor simulator: which charges it declines, how a request is
// fingerprinted for idempotency, what a refund may give back, and its errors. No I/O.
import { createHash } from "node:crypto";
import { defineErrors } from "@ovation/errors";

export const cardLimits = {
  amountMax: 1_000_000_000_000_000n,
  referenceMaxLength: 128,
  metadataEntriesMax: 16,
  metadataTextMaxLength: 128,
} as const;

/** The card domain's operating errors, each with the kind of failure it is (@ovation/errors). */
export const CardError = defineErrors("card", {
  idempotency_conflict: "already_exists",
  charge_not_found: "not_found",
  not_refundable: "failed_precondition",
  already_refunded: "failed_precondition",
  refund_too_large: "invalid_argument",
  merchant_not_allowed: "permission_denied",
});
export type CardError = InstanceType<typeof CardError>;
export type CardErrorCode = CardError["code"];

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
  if (!charge.succeeded) throw new CardError("not_refundable", "only a succeeded charge can be refunded");
  if (charge.refund !== null) {
    if (charge.refund.key === request.key && charge.refund.amount === request.amount) return "replay";
    throw new CardError("already_refunded", "the charge was refunded already");
  }
  if (request.asset !== charge.asset)
    throw new CardError("refund_too_large", `the charge was in ${charge.asset}, not ${request.asset}`);
  if (request.amount > charge.amount)
    throw new CardError(
      "refund_too_large",
      `a refund of ${request.amount} is more than the ${charge.amount} charged`,
    );
  return "refund";
}
