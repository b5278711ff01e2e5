// Every DiscountService request is validated here before any use case runs.
import { CampaignKind, CampaignStatus } from "@ovation/proto/gen/ovation/discount/v1/discount_pb.ts";
import { idempotencyKeyPattern } from "@ovation/server";
import { z } from "zod";
import { discountLimits, normalizeCode, sharedCodePattern } from "../domain/campaign.ts";

const uuid = z.uuid("must be a UUID");
const idempotencyKeyRule = "must be 1..128 printable ASCII characters, no spaces";
const idempotencyKey = z.string().regex(idempotencyKeyPattern, idempotencyKeyRule);
const timestamp = z.object({ seconds: z.bigint(), nanos: z.number().int() }, { error: "is required" });

export const requestSchemas = {
  createCampaign: z
    .object({
      name: z.string().trim().min(1, "is required").max(discountLimits.nameMaxLength),
      kind: z
        .enum(CampaignKind)
        .refine((k) => k !== CampaignKind.UNSPECIFIED, "must be SHARED_CODE or SINGLE_USE"),
      code: z.string().max(64).transform(normalizeCode),
      money: z.object(
        {
          asset: z.string(),
          amount: z.bigint().min(1n, "must be at least 1").max(discountLimits.amountMax, "is too large"),
        },
        { error: "is required" },
      ),
      redemptionLimit: z.bigint().min(0n).max(discountLimits.sharedLimitMax, "is too large"),
      perUserLimit: z.number().int().min(0).max(discountLimits.perUserLimitMax),
      startTime: timestamp.optional(),
      endTime: timestamp,
      activate: z.boolean(),
      idempotencyKey,
    })
    .superRefine((r, ctx) => {
      if (r.kind === CampaignKind.SHARED_CODE) {
        if (!sharedCodePattern.test(r.code))
          ctx.addIssue({ code: "custom", path: ["code"], message: "must be 4..32 of A-Z and 0-9" });
        if (r.redemptionLimit < 1n)
          ctx.addIssue({ code: "custom", path: ["redemptionLimit"], message: "must be at least 1" });
      } else {
        if (r.code !== "")
          ctx.addIssue({ code: "custom", path: ["code"], message: "must be empty for SINGLE_USE" });
        if (r.redemptionLimit !== 0n)
          ctx.addIssue({
            code: "custom",
            path: ["redemptionLimit"],
            message: "must be 0: the codes set the limit",
          });
      }
    }),
  setStatus: z.object({
    campaignId: uuid,
    status: z
      .enum(CampaignStatus)
      .refine(
        (s) => s === CampaignStatus.ACTIVE || s === CampaignStatus.PAUSED || s === CampaignStatus.ENDED,
        "must be ACTIVE, PAUSED or ENDED",
      ),
  }),
  generateCodes: z.object({
    campaignId: uuid,
    count: z.number().int().min(1, "must be at least 1").max(discountLimits.codesPerCallMax),
    idempotencyKey,
  }),
  redeem: z.object({
    code: z.string().min(1, "is required").max(64, "is too long"),
    // Optional: empty means none.
    idempotencyKey: z
      .string()
      .refine((key) => key === "" || idempotencyKeyPattern.test(key), idempotencyKeyRule),
  }),
  campaign: z.object({ campaignId: uuid }),
};

export { validateRequest as validate } from "@ovation/server";
