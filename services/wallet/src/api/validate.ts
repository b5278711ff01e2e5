// Every request is validated here, in one place, before any use case runs. A bad request gets
// INVALID_ARGUMENT naming each bad field, and nothing changes.
import { idempotencyKeyPattern } from "@ovation/server";
import { z } from "zod";
import {
  assetPattern,
  ledgerLimits,
  ownerPattern,
  TransferKind,
  type TransferKindValue,
  userIdPattern,
} from "../domain/ledger.ts";

const owner = z.string().regex(ownerPattern, 'must be "user:<id>" or "system:<name>"');
const userId = z.string().regex(userIdPattern, "must be 1..128 of A-Z a-z 0-9 _ . @ -");
const optionalUserId = z.union([z.literal(""), userId]);
const asset = z.string().regex(assetPattern, "must be an asset code such as COIN");
const amount = z.bigint().min(1n, "must be at least 1").max(ledgerLimits.amountMax, "is too large");
const money = z.object({ asset, amount }, { error: "is required" });
const text = z
  .string()
  .max(ledgerLimits.referenceMaxLength, `must be at most ${ledgerLimits.referenceMaxLength} characters`);
const idempotencyKey = z
  .string()
  .regex(idempotencyKeyPattern, "must be 1..128 printable ASCII characters, no spaces");
const metadata = z
  .record(
    z.string().min(1).max(ledgerLimits.metadataTextMaxLength),
    z.string().max(ledgerLimits.metadataTextMaxLength),
  )
  .refine((m) => Object.keys(m).length <= ledgerLimits.metadataEntriesMax, "has too many entries");
const kind = z
  .number()
  .refine(
    (k) => k !== TransferKind.UNSPECIFIED && Object.values(TransferKind).includes(k as never),
    "must be a TransferKind",
  )
  .transform((k) => k as TransferKindValue);
const event = z
  .object({
    eventId: z.uuid("must be a UUID"),
    subject: z.string().regex(/^[a-z]+(\.[a-z_]+){2}$/, 'must be "<domain>.<entity>.<verb>"'),
    type: z.string().min(1).max(128),
    payload: z
      .instanceof(Uint8Array)
      .refine((p) => p.length <= ledgerLimits.eventPayloadMaxBytes, "is too large"),
    headers: z
      .partialRecord(
        z.enum(["traceparent", "tracestate"], "only trace headers may be set"),
        z.string().max(512),
      )
      .refine((h) => Object.keys(h).length <= 8, "has too many entries"),
  })
  .optional();
/** A user's bearer token, verified by the handler (api/wallet-service.ts). */
const consentToken = z.string().max(ledgerLimits.consentTokenMaxLength, "is too long");
const budgetId = z.string().regex(userIdPattern, "must be 1..128 of A-Z a-z 0-9 _ . @ -");
const pageSize = z.number().int().min(0).max(ledgerLimits.pageSizeMax);
const pageToken = z.string().max(64);
const uuid = z.uuid("must be a UUID");

/** Items of one TransferBatch call at most. */
export const transferBatchMax = 256;

export const requestSchemas = {
  getBalances: z.object({ userId: optionalUserId }),
  listTransfers: z.object({
    userId: optionalUserId,
    asset: z.union([z.literal(""), asset]),
    pageSize,
    pageToken,
  }),
  transfer: z
    .object({
      debitOwner: owner,
      creditOwner: owner,
      money,
      kind,
      reference: text,
      metadata,
      idempotencyKey,
      event,
      consentToken,
    })
    .refine((r) => r.debitOwner !== r.creditOwner, {
      message: "must differ from debit_owner",
      path: ["creditOwner"],
    }),
  mint: z.object({ userId, money, reference: text, idempotencyKey }),
  reserveHold: z.object({
    owner: z
      .string()
      .regex(/^user:/, 'must be "user:<id>"')
      .pipe(owner),
    money,
    reference: text,
    ttlSeconds: z.number().int().min(0).max(ledgerLimits.holdTtlMaxSeconds),
    idempotencyKey,
    consentToken,
  }),
  captureHold: z.object({
    holdId: uuid,
    creditOwner: owner,
    amount: z.bigint().min(0n).max(ledgerLimits.amountMax),
    kind,
    event,
  }),
  voidHold: z.object({ holdId: uuid }),
  refundHold: z.object({
    holdId: uuid,
    amount: z.bigint().min(0n).max(ledgerLimits.amountMax, "is too large"),
    idempotencyKey,
  }),
  fundPromotionBudget: z.object({
    budgetId,
    money,
    credits: z.bigint().min(1n, "must be at least 1").max(ledgerLimits.budgetCreditsMax, "is too many"),
    idempotencyKey,
  }),
  getPromotionBudget: z.object({ budgetId }),
};

export { validateRequest as validate } from "@ovation/server";
