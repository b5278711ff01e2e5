// Every GiftService request is validated here before any use case runs.
import { GiftDirection, LeaderboardPeriod } from "@ovation/proto/gen/ovation/gift/v1/gift_pb.ts";
import { idempotencyKeyPattern } from "@ovation/server";
import { z } from "zod";
import { BoostTargetType, boostLimits, canonicalTarget } from "../domain/boosts.ts";
import { giftLimits } from "../domain/rules.ts";

const giftId = z.string().regex(/^[a-z0-9-]{1,64}$/, "must be 1..64 of a-z, 0-9 and -");
const uuid = z.uuid("must be a UUID");
const idempotencyKey = z
  .string()
  .regex(idempotencyKeyPattern, "must be 1..128 printable ASCII characters, no spaces");
const giftFields = z.object(
  {
    id: giftId,
    name: z.string().trim().min(1, "is required").max(giftLimits.nameMaxLength),
    price: z.bigint().min(1n, "must be at least 1").max(giftLimits.priceMax, "is too large"),
    pkPoints: z.bigint().min(0n).max(giftLimits.pointsMax, "is too large"),
    vipOnly: z.boolean(),
    minVipLevel: z.number().int().min(0).max(giftLimits.vipLevelMax),
    animationKey: z.string().max(64),
  },
  { error: "is required" },
);
const pageSize = z.number().int().min(0).max(giftLimits.pageSizeMax);
const limit = z.number().int().min(0).max(giftLimits.leaderboardMax);

export const requestSchemas = {
  createGift: z.object({ gift: giftFields }),
  updateGift: z
    .object({ giftId, gift: giftFields.extend({ id: z.union([z.literal(""), giftId]) }) })
    .refine((r) => r.gift.id === "" || r.gift.id === r.giftId, {
      message: "must match gift_id",
      path: ["gift", "id"],
    }),
  retireGift: z.object({ giftId }),
  startLive: z.object({ title: z.string().max(giftLimits.titleMaxLength) }),
  room: z.object({ roomId: uuid }),
  sendGift: z.object({
    roomId: uuid,
    giftId,
    count: z
      .number()
      .int()
      .min(1, "must be at least 1")
      .max(giftLimits.countMax, `must be at most ${giftLimits.countMax}`),
    idempotencyKey,
  }),
  history: z.object({
    direction: z.enum(GiftDirection),
    pageSize,
    pageToken: z.string().max(200),
  }),
  roomLeaderboard: z.object({ roomId: uuid, limit }),
  hostLeaderboard: z.object({ period: z.enum(LeaderboardPeriod), limit }),
  purchaseBoost: z
    .object({
      targetType: z
        .enum(BoostTargetType)
        .refine((type) => type !== BoostTargetType.UNSPECIFIED, "is required: HOST, ROOM or PK_SIDE"),
      // A host's user id, a room's id or "<battle id>:A|B": printable characters only (a NUL or
      // another control character is no one's id, and the database refuses to store it).
      targetId: z
        .string()
        .min(1, "is required")
        .max(128, "must be at most 128 characters")
        .regex(/^[\x21-\x7e]+$/, "must be printable ASCII characters, no spaces"),
      amount: z
        .bigint()
        .min(boostLimits.amountMin, `must be at least ${boostLimits.amountMin}`)
        .max(boostLimits.amountMax, `must be at most ${boostLimits.amountMax}`),
      durationHours: z
        .number()
        .int()
        .min(boostLimits.durationHoursMin, `must be at least ${boostLimits.durationHoursMin}`)
        .max(boostLimits.durationHoursMax, `must be at most ${boostLimits.durationHoursMax}`),
      idempotencyKey,
    })
    .transform((request) => ({
      ...request,
      targetId: canonicalTarget(request.targetType, request.targetId),
    })),
  discover: z.object({ pageSize: z.number().int().min(0).max(boostLimits.discoverPageMax) }),
};

export { validateRequest as validate } from "@ovation/server";
