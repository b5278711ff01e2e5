// Pure gift rules: who may send what, combo streaks, leaderboard periods. No I/O.

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

/** Throws the GiftError that forbids this send, if any. */
export function assertSendable(
  gift: CatalogGift | undefined,
  room: LiveRoom | undefined,
  senderId: string,
  vipLevel: number,
) {
  if (gift === undefined) throw new GiftError(giftErrorCodes.giftNotFound, "no such gift");
  if (!gift.active) throw new GiftError(giftErrorCodes.giftRetired, `gift ${gift.id} is retired`);
  if (room === undefined) throw new GiftError(giftErrorCodes.roomNotFound, "no such room");
  if (room.status !== roomStatus.live)
    throw new GiftError(giftErrorCodes.roomNotLive, "the room is not live");
  if (room.hostId === senderId)
    throw new GiftError(giftErrorCodes.selfGift, "hosts cannot send gifts to themselves");
  const required = requiredVipLevel(gift);
  if (vipLevel < required) {
    throw new GiftError(
      giftErrorCodes.vipRequired,
      `gift ${gift.id} needs VIP level ${required}, you have ${vipLevel}`,
    );
  }
}

/** VIP-only gifts need at least level 1 even when no minimum is set. */
export const requiredVipLevel = (gift: Pick<CatalogGift, "vipOnly" | "minVipLevel">) =>
  gift.vipOnly ? Math.max(1, gift.minVipLevel) : gift.minVipLevel;

/**
 * The streak a send reaches: the same sender sending the same gift in the same room within
 * `windowMs` of the previous send counts up (x1, x2, …); otherwise it starts again at 1. A send
 * stamped before the previous one (concurrent sends, which take the streak in lock order) is
 * part of the same burst and counts up too.
 */
export function nextCombo(
  previous: { streak: number; lastAt: Date } | undefined,
  now: Date,
  windowMs: number,
): number {
  if (previous === undefined) return 1;
  const gap = now.getTime() - previous.lastAt.getTime();
  return gap <= windowMs ? previous.streak + 1 : 1;
}

/** Leaderboard buckets a gift at `at` counts in: its UTC day, its ISO week (Monday), all time. */
export function periodKeys(at: Date): { day: string; week: string; all: string } {
  const day = at.toISOString().slice(0, 10);
  const monday = new Date(Date.UTC(at.getUTCFullYear(), at.getUTCMonth(), at.getUTCDate()));
  monday.setUTCDate(monday.getUTCDate() - ((monday.getUTCDay() + 6) % 7));
  return { day: `day:${day}`, week: `week:${monday.toISOString().slice(0, 10)}`, all: "all" };
}
