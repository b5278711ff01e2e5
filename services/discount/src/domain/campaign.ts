// Pure discount rules: codes (normalising, generating, hashing), limits, errors. No I/O.
import { createHash, randomBytes } from "node:crypto";
import { defineErrors } from "@ovation/errors";

export const discountLimits = {
  nameMaxLength: 120,
  amountMax: 1_000_000_000_000n,
  sharedLimitMax: 10_000_000n,
  perUserLimitMax: 100,
  windowMaxMs: 366 * 24 * 3600 * 1000,
  codesPerCallMax: 10_000,
  codesPerCampaignMax: 1_000_000,
} as const;

/** The discount domain's operating errors, each with the kind of failure it is (@ovation/errors). */
export const DiscountError = defineErrors("discount", {
  unknown_code: "not_found",
  already_redeemed: "already_exists",
  exhausted: "resource_exhausted",
  inactive: "failed_precondition",
  campaign_not_found: "not_found",
  invalid_campaign: "invalid_argument",
  idempotency_conflict: "already_exists",
  rate_limited: "resource_exhausted",
  too_many_watches: "resource_exhausted",
});
export type DiscountError = InstanceType<typeof DiscountError>;
export type DiscountErrorCode = DiscountError["code"];

/** What a user types, as stored: upper case, without spaces and dashes. */
export const normalizeCode = (code: string): string => code.replace(/[\s-]/g, "").toUpperCase();

/** Shared codes: 4..32 of A-Z and 0-9 after normalising. */
export const sharedCodePattern = /^[A-Z0-9]{4,32}$/;

// Crockford's base32: no I, L, O, U, so codes read aloud or typed from a card are unambiguous.
const alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/** 16 characters × 5 bits = 80 random bits: guessing one of a million codes takes ~2^60 tries. */
export const singleUseCodeLength = 16;

export function generateCode(): string {
  const bytes = randomBytes(10);
  let bits = 0n;
  for (const byte of bytes) bits = (bits << 8n) | BigInt(byte);
  let code = "";
  for (let i = 0; i < singleUseCodeLength; i++) {
    code = alphabet[Number(bits & 31n)] + code;
    bits >>= 5n;
  }
  return code;
}

/** Single-use codes are stored as SHA-256 of the normalised code: 80 random bits need no salt. */
export const hashCode = (code: string): Buffer => createHash("sha256").update(normalizeCode(code)).digest();

/** A code that could be a single-use one (anything else is not looked up). */
export const looksSingleUse = (code: string): boolean =>
  code.length === singleUseCodeLength && [...code].every((ch) => alphabet.includes(ch));
