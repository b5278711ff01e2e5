// Every CardService request is validated here before any use case runs.
import { idempotencyKeyPattern } from "@ovation/server";
import { z } from "zod";
import { cardLimits } from "../domain/charges.ts";

const idempotencyKey = z
  .string()
  .regex(idempotencyKeyPattern, "must be 1..128 printable ASCII characters, no spaces");
const money = z.object(
  {
    asset: z.string().regex(/^[A-Z][A-Z0-9]{1,15}$/, "must be an asset code such as TOMAN"),
    amount: z.bigint().min(1n, "must be at least 1").max(cardLimits.amountMax, "is too large"),
  },
  { error: "is required" },
);
const metadata = z
  .record(
    z.string().min(1).max(cardLimits.metadataTextMaxLength),
    z.string().max(cardLimits.metadataTextMaxLength),
  )
  .refine((m) => Object.keys(m).length <= cardLimits.metadataEntriesMax, "has too many entries");

export const requestSchemas = {
  charge: z.object({
    idempotencyKey,
    reference: z.string().min(1, "is required").max(cardLimits.referenceMaxLength),
    customerId: z.string().regex(/^[A-Za-z0-9_.@-]{1,128}$/, "must be 1..128 of A-Z a-z 0-9 _ . @ -"),
    amount: money,
    metadata,
  }),
  getCharge: z.object({ idempotencyKey }),
  refund: z.object({ chargeId: z.uuid("must be a UUID"), amount: money, idempotencyKey }),
};

export { validateRequest as validate } from "@ovation/server";
