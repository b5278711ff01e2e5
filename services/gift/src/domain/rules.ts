// Pure gift rules: who may send what, leaderboard periods. No I/O. Combo streaks are counted
// where the claim is recorded, in claim_send (store/migrations.ts), one round trip per send.

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

export const giftErrorCodes = {
  giftNotFound: "gift_not_found",
  giftRetired: "gift_retired",
  giftExists: "gift_exists",
  roomNotFound: "room_not_found",
  roomNotLive: "room_not_live",
  notRoomHost: "not_room_host",
  selfGift: "self_gift",
  vipRequired: "vip_required",
  insufficientBalance: "insufficient_balance",
  idempotencyConflict: "idempotency_conflict",
  invalidBoostTarget: "invalid_boost_target",
  boostTargetNotFound: "boost_target_not_found",
  boostTargetOver: "boost_target_over",
} as const;

export type GiftErrorCode = (typeof giftErrorCodes)[keyof typeof giftErrorCodes];

export class GiftError extends Error {
  override name = "GiftError";
  readonly code: GiftErrorCode;

  constructor(code: GiftErrorCode, message: string) {
    super(message);
    this.code = code;
  }
}

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
  if (gift === undefined) return new GiftError(giftErrorCodes.giftNotFound, "no such gift");
  if (!gift.active) return new GiftError(giftErrorCodes.giftRetired, `gift ${gift.id} is retired`);
  if (room !== undefined && room.status !== roomStatus.live)
    return new GiftError(giftErrorCodes.roomNotLive, "the room is not live");
  if (room !== undefined && room.hostId === senderId)
    return new GiftError(giftErrorCodes.selfGift, "hosts cannot send gifts to themselves");
  const required = requiredVipLevel(gift);
  if (vipLevel < required) {
    return new GiftError(
      giftErrorCodes.vipRequired,
      `gift ${gift.id} needs VIP level ${required}, you have ${vipLevel}`,
    );
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
