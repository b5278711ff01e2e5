// Every PkService request is validated here before any use case runs.
import { BattleMode, TiePolicy } from "@ovation/proto/gen/ovation/pk/v1/pk_pb.ts";
import { idempotencyKeyPattern } from "@ovation/server";
import { z } from "zod";
import { pkLimits } from "../domain/battle.ts";

const uuid = z.uuid("must be a UUID");
const hostId = z.string().regex(/^[\x21-\x7e]{1,64}$/, "must be 1..64 printable ASCII characters");
const idempotencyKey = z
  .string()
  .regex(idempotencyKeyPattern, "must be 1..128 printable ASCII characters, no spaces");
const zeroOr = (min: number, max: number) =>
  z
    .number()
    .int()
    .refine((n) => n === 0 || (n >= min && n <= max), `must be 0 (the default) or ${min}..${max}`);
const side = z.array(hostId).max(pkLimits.teamSideMax, `must hold at most ${pkLimits.teamSideMax} hosts`);

export const requestSchemas = {
  createBattle: z.object({
    mode: z.enum(BattleMode).refine((m) => m !== BattleMode.UNSPECIFIED, "must be SOLO or TEAM"),
    sideA: side,
    sideB: side,
    durationSeconds: zeroOr(1, pkLimits.durationMaxSeconds),
    tiePolicy: z.enum(TiePolicy),
    bonusRoundSeconds: zeroOr(1, pkLimits.bonusRoundMaxSeconds),
    bonusRoundsMax: z.number().int().min(0).max(pkLimits.bonusRoundsMax),
    idempotencyKey,
  }),
  battle: z.object({ battleId: uuid }),
  listBattles: z.object({
    hostId: z.union([z.literal(""), hostId]),
    pageSize: z.number().int().min(0).max(pkLimits.pageSizeMax),
    pageToken: z.string().max(200),
  }),
  createBonusWindow: z.object({
    multiplier: z.number().int().min(pkLimits.multiplierMin).max(pkLimits.multiplierMax),
    startTime: z.object({ seconds: z.bigint(), nanos: z.number().int() }).optional(),
    durationSeconds: z.number().int().min(pkLimits.windowMinSeconds).max(pkLimits.windowMaxSeconds),
    battleId: z.union([z.literal(""), uuid]),
    giftId: z.union([
      z.literal(""),
      z.string().regex(/^[a-z0-9-]{1,64}$/, "must be 1..64 of a-z, 0-9 and -"),
    ]),
    idempotencyKey,
  }),
};

export { validateRequest as validate } from "@ovation/server";
