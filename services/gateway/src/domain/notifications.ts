// User notifications: which wallet events deserve a lasting notice in someone's list, and its
// words. Pure rules, no I/O; the consumers in events/ store what these functions return and the
// store's trigger pushes each new row to the user's sockets.
//
// Who hears what (docs/decisions/0020-user-notifications.md):
// - every host a boost benefits, unless the buyer boosted themselves;
// - coins that landed in a wallet: purchases (and mints) and, of the earned coins, promotion
//   credits and refunds.
// Spent coins and gift income are not notified: the payer just acted, and one notice per gift
// received would flood a host whose gifts already show live on the room channel.
//
// Every field is bounded (ids and assets clipped to a number of bytes), so a notification as
// JSON stays far below the 8,000 bytes a Postgres NOTIFY payload may hold, whatever an event
// carries.
import { createHash } from "node:crypto";
import { type Timestamp, timestampDate } from "@bufbuild/protobuf/wkt";
import {
  type BoostPurchased,
  BoostTargetType,
  BoostTargetTypeSchema,
  type CreditEvent,
  CreditEventKind,
  CreditEventKindSchema,
} from "@ovation/proto/gen/ovation/wallet/v1/events_pb.ts";
import { TransferKind, TransferKindSchema } from "@ovation/proto/gen/ovation/wallet/v1/wallet_pb.ts";

export const notificationTypes = {
  /** A host's profile, live room or PK side was boosted by someone else. */
  boostReceived: "boost.received",
  /** Coins bought (or issued by an admin) landed in the wallet. */
  creditPurchased: "credit.purchased",
  /** A promotion credit or a refund landed in the wallet. */
  creditEarned: "credit.earned",
} as const;

export type NotificationType = (typeof notificationTypes)[keyof typeof notificationTypes];

export interface Notification {
  /** Derived from the event's content (see notificationId): the same event gives the same id. */
  id: string;
  userId: string;
  type: NotificationType;
  text: string;
  /** Details for clients, camelCase, 64-bit amounts as strings, times as RFC 3339. */
  data: Record<string, string | number | null>;
  /** When what it tells happened (the boost's start, the transfer's commit), milliseconds. */
  createdAt: Date;
}

export const notificationLimits = {
  /** User ids are 1..128 characters (tokens carry no longer ones); others are not notified. */
  userIdMaxBytes: 128,
  /** Any id copied into data (boost, transfer, target, reference) is clipped to this. */
  dataValueMaxBytes: 128,
  /** A buyer's id as quoted in the text. */
  nameInTextMaxBytes: 64,
  assetMaxBytes: 16,
  /** Upper bounds the store's check constraints assert; the functions stay far below them. */
  textMaxBytes: 1_000,
  dataMaxBytes: 4_000,
} as const;

/** Postgres refuses NOTIFY payloads of 8,000 bytes or more. */
export const notifyPayloadMaxBytes = 7_999;

const boostTargetWords: Record<number, string> = {
  [BoostTargetType.HOST]: "Your profile",
  [BoostTargetType.ROOM]: "Your live room",
  [BoostTargetType.PK_SIDE]: "Your PK side",
};

/** One notification per host the boost benefits, except a buyer boosting themselves. */
export function boostNotifications(event: BoostPurchased, receivedAt: Date): Notification[] {
  const money = moneyOf(event.money);
  const hours = event.durationHours;
  const subject = boostTargetWords[event.targetType] ?? "Your profile";
  const text = `${subject} was boosted by ${clip(event.buyerId, notificationLimits.nameInTextMaxBytes)} for ${hours} ${hours === 1 ? "hour" : "hours"} (${money.text})`;
  const data = {
    boostId: clip(event.boostId, notificationLimits.dataValueMaxBytes),
    buyerId: clip(event.buyerId, notificationLimits.dataValueMaxBytes),
    targetType: enumName(BoostTargetTypeSchema.values, event.targetType),
    targetId: clip(event.targetId, notificationLimits.dataValueMaxBytes),
    asset: money.asset,
    amount: money.amount,
    durationHours: hours,
    startTime: isoOrNull(event.startTime),
    expireTime: isoOrNull(event.expireTime),
  };
  const createdAt = timeOr(event.startTime, receivedAt);
  const hosts = new Set(event.hostIds.filter((host) => isUserId(host) && host !== event.buyerId));
  return [...hosts].map((host) => ({
    id: notificationId([notificationTypes.boostReceived, event.boostId, host]),
    userId: host,
    type: notificationTypes.boostReceived,
    text,
    data,
    createdAt,
  }));
}

/** Coins that landed: purchases and mints, promotion credits, refunds. Nothing else. */
export function creditNotifications(event: CreditEvent, receivedAt: Date): Notification[] {
  const words = creditWords(event);
  if (words === undefined || !isUserId(event.userId) || (event.money?.amount ?? 0n) <= 0n) return [];
  const money = moneyOf(event.money);
  return [
    {
      id: notificationId([words.type, event.transferId, event.userId]),
      userId: event.userId,
      type: words.type,
      text: words.text(money.text),
      data: {
        transferId: clip(event.transferId, notificationLimits.dataValueMaxBytes),
        kind: enumName(CreditEventKindSchema.values, event.kind),
        reason: enumName(TransferKindSchema.values, event.reason),
        asset: money.asset,
        amount: money.amount,
        reference: clip(event.reference, notificationLimits.dataValueMaxBytes),
        time: isoOrNull(event.time),
      },
      createdAt: timeOr(event.time, receivedAt),
    },
  ];
}

function creditWords(
  event: CreditEvent,
): { type: NotificationType; text: (money: string) => string } | undefined {
  if (event.kind === CreditEventKind.PURCHASED)
    return { type: notificationTypes.creditPurchased, text: (money) => `${money} landed in your wallet` };
  if (event.kind !== CreditEventKind.EARNED) return undefined;
  if (event.reason === TransferKind.PROMOTION)
    return {
      type: notificationTypes.creditEarned,
      text: (money) => `${money} promotion credit landed in your wallet`,
    };
  if (event.reason === TransferKind.REFUND)
    return { type: notificationTypes.creditEarned, text: (money) => `${money} refunded to your wallet` };
  return undefined;
}

/**
 * A UUID (version 8, RFC 9562) from the SHA-256 of what identifies the notification: the type,
 * the boost or transfer, and the recipient. The same event published twice, even under two
 * event ids, gives the same id, and the store keeps one row.
 */
export function notificationId(parts: readonly string[]): string {
  const hash = createHash("sha256").update(parts.join("\n")).digest();
  hash[6] = (hash[6]! & 0x0f) | 0x80;
  hash[8] = (hash[8]! & 0x3f) | 0x80;
  const hex = hash.subarray(0, 16).toString("hex");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** A notification as REST lists it and the `user` channel pushes it. */
export interface NotificationJson {
  id: string;
  type: string;
  text: string;
  data: Record<string, unknown>;
  createTime: string;
}

export const notificationJson = (notification: Omit<Notification, "userId">): NotificationJson => ({
  id: notification.id,
  type: notification.type,
  text: notification.text,
  data: notification.data,
  createTime: notification.createdAt.toISOString(),
});

const isUserId = (id: string) => id !== "" && Buffer.byteLength(id) <= notificationLimits.userIdMaxBytes;

function moneyOf(money: { asset: string; amount: bigint } | undefined) {
  const asset = clip(money?.asset ?? "", notificationLimits.assetMaxBytes);
  const amount = (money?.amount ?? 0n).toString();
  return { asset, amount, text: `${amount} ${asset}` };
}

const enumName = (values: readonly { number: number; name: string }[], value: number) =>
  values.find((candidate) => candidate.number === value)?.name ?? String(value);

/** Rows are written in the present: a time outside these years is a broken event, not news. */
const plausibleYears = { min: 2000, max: 9999 } as const;

function timeOr(time: Timestamp | undefined, fallback: Date): Date {
  if (time === undefined) return fallback;
  const date = timestampDate(time);
  const year = date.getUTCFullYear();
  return Number.isNaN(date.getTime()) || year < plausibleYears.min || year > plausibleYears.max
    ? fallback
    : date;
}

const isoOrNull = (time: Timestamp | undefined) => {
  if (time === undefined) return null;
  const date = timestampDate(time);
  return Number.isNaN(date.getTime()) ? null : date.toISOString();
};

/** At most `maxBytes` of UTF-8, cut at a character boundary, "…" marking a cut. */
export function clip(value: string, maxBytes: number): string {
  if (Buffer.byteLength(value) <= maxBytes) return value;
  let result = "";
  let bytes = 0;
  const ellipsisBytes = 3;
  for (const character of value) {
    const size = Buffer.byteLength(character);
    if (bytes + size > maxBytes - ellipsisBytes) break;
    result += character;
    bytes += size;
  }
  return `${result}…`;
}
