// Pure gift rules: who may send what, leaderboard periods. No I/O. Combo streaks are counted
// where the claim is recorded, in claim_send (store/migrations.ts), one round trip per send.
import { defineErrors } from "@ovation/errors";

export const giftLimits = {
  countMax: 9_999,
  priceMax: 1_000_000n,
  pointsMax: 1_000_000n,
  vipLevelMax: 100,
  titleMaxLength: 120,
  nameMaxLength: 64,
  pageSizeDefault: 20,
  pageSizeMax: 100,
  leaderboardDefault: 10,
  leaderboardMax: 100,
} as const;

/** The gift domain's operating errors, each with the kind of failure it is (@ovation/errors). */
export const GiftError = defineErrors("gift", {
  gift_not_found: "not_found",
  gift_retired: "failed_precondition",
  gift_exists: "already_exists",
  room_not_found: "not_found",
  room_not_live: "failed_precondition",
  not_room_host: "permission_denied",
  self_gift: "failed_precondition",
  vip_required: "permission_denied",
  insufficient_balance: "failed_precondition",
  idempotency_conflict: "already_exists",
  invalid_boost_target: "invalid_argument",
  boost_target_not_found: "not_found",
  boost_target_over: "failed_precondition",
});
export type GiftError = InstanceType<typeof GiftError>;
export type GiftErrorCode = GiftError["code"];

export interface CatalogGift {
  id: string;
  name: string;
  price: bigint;
  pkPoints: bigint;
  vipOnly: boolean;
  minVipLevel: number;
  animationKey: string;
  active: boolean;
  updatedAt: Date;
}

export interface LiveRoom {
  id: string;
  hostId: string;
  status: number;
}

export const roomStatus = { live: 1, ended: 2 } as const;

/**
 * The GiftError that forbids this send, judged from what this replica knows, or undefined. A
 * room the replica has not heard of is not refused here: it may have started a moment ago, and
 * the claim checks the room authoritatively anyway.
 */
export function sendRefusal(
  gift: CatalogGift | undefined,
  room: LiveRoom | undefined,
  senderId: string,
  vipLevel: number,
): GiftError | undefined {
  if (gift === undefined) return new GiftError("gift_not_found", "no such gift");
  if (!gift.active) return new GiftError("gift_retired", `gift ${gift.id} is retired`);
  if (room !== undefined && room.status !== roomStatus.live)
    return new GiftError("room_not_live", "the room is not live");
  if (room !== undefined && room.hostId === senderId)
    return new GiftError("self_gift", "hosts cannot send gifts to themselves");
  const required = requiredVipLevel(gift);
  if (vipLevel < required) {
    return new GiftError("vip_required", `gift ${gift.id} needs VIP level ${required}, you have ${vipLevel}`);
  }
  return undefined;
}

/** VIP-only gifts need at least level 1 even when no minimum is set. */
export const requiredVipLevel = (gift: Pick<CatalogGift, "vipOnly" | "minVipLevel">) =>
  gift.vipOnly ? Math.max(1, gift.minVipLevel) : gift.minVipLevel;

/** Leaderboard buckets a gift at `at` counts in: its UTC day, its ISO week (Monday), all time. */
export function periodKeys(at: Date): { day: string; week: string; all: string } {
  const day = at.toISOString().slice(0, 10);
  const monday = new Date(Date.UTC(at.getUTCFullYear(), at.getUTCMonth(), at.getUTCDate()));
  monday.setUTCDate(monday.getUTCDate() - ((monday.getUTCDay() + 6) % 7));
  return { day: `day:${day}`, week: `week:${monday.toISOString().slice(0, 10)}`, all: "all" };
}
