// Feeds: which JetStream subject carries which channel messages, and how an event becomes
// them. Pure mapping, no I/O; consumers.ts runs one consumer per feed. What each message's data
// holds is declared in messages.ts, which these functions are typed against: camelCase names,
// 64-bit amounts as strings, as in the REST API's JSON.
import { type DescMessage, type MessageShape, toJson } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import type { Domain } from "@ovation/events";
import { CampaignStatusSchema } from "@ovation/proto/gen/ovation/discount/v1/discount_pb.ts";
import {
  type CampaignChanged,
  CampaignChangedSchema,
} from "@ovation/proto/gen/ovation/discount/v1/events_pb.ts";
import { type GiftSent, GiftSentSchema } from "@ovation/proto/gen/ovation/gift/v1/events_pb.ts";
import {
  type OrderStatusChanged,
  OrderStatusChangedSchema,
} from "@ovation/proto/gen/ovation/order/v1/events_pb.ts";
import { OrderSchema } from "@ovation/proto/gen/ovation/order/v1/order_pb.ts";
import {
  BattleBonusRoundSchema,
  BattleCancelledSchema,
  BattleEndedSchema,
  BattleInvitedSchema,
  type BattleScored,
  BattleScoredSchema,
  BattleStartedSchema,
  BattleTimeUpSchema,
} from "@ovation/proto/gen/ovation/pk/v1/events_pb.ts";
import { type Battle, BattleSchema, ParticipantStatus } from "@ovation/proto/gen/ovation/pk/v1/pk_pb.ts";
import {
  type BoostPurchased,
  BoostPurchasedSchema,
  BoostTargetType,
  type TransferCommitted,
  TransferCommittedSchema,
} from "@ovation/proto/gen/ovation/wallet/v1/events_pb.ts";
import { TransferKindSchema } from "@ovation/proto/gen/ovation/wallet/v1/wallet_pb.ts";
import type { ChannelMessage, MessageType } from "./messages.ts";

/** Messages whose data is the whole battle, on its pk channel. */
type BattleMessageType = Exclude<MessageType<"pk">, "pk.scored" | "pk.boosted">;

export type { ChannelMessage } from "./messages.ts";

export interface Feed<Desc extends DescMessage = DescMessage> {
  /** Stream and subject without the deployment prefix. */
  stream: Domain;
  subject: string;
  schema: Desc;
  messages(event: MessageShape<Desc>): ChannelMessage[];
  /**
   * For events that each carry a whole state (a battle's scores): the entity and the state's
   * position, increasing per entity. Two publishers (the outbox relays of two replicas) may store
   * them out of order; one older than the newest already delivered is dropped, or it would
   * overwrite the newer state on every screen.
   */
  order?(event: MessageShape<Desc>): { key: string; position: number } | undefined;
}

const feed = <Desc extends DescMessage>(spec: Feed<Desc>): Feed => spec as unknown as Feed;

/** Donation alerts: every gift sent in a room, with what a client needs to animate it. */
export function giftSentMessages(event: GiftSent): ChannelMessage[] {
  return [
    {
      kind: "room",
      id: event.roomId,
      type: "gift.sent",
      data: {
        sendId: event.sendId,
        senderId: event.senderId,
        hostId: event.hostId,
        roomId: event.roomId,
        giftId: event.giftId,
        giftName: event.giftName,
        animationKey: event.animationKey,
        count: event.count,
        combo: event.combo,
        total: event.total.toString(),
        sendTime: event.sendTime === undefined ? null : timestampDate(event.sendTime).toISOString(),
      },
      // In a storm, the biggest gifts are the ones a room should still see.
      priority: Number(event.total),
    },
  ];
}

const userOwnerPrefix = "user:";

/** Wallet notifications: the debited user hears "debited", the credited user "credited". */
export function transferMessages(event: TransferCommitted): ChannelMessage[] {
  const transfer = event.transfer;
  if (transfer === undefined) return [];
  const data = {
    transferId: transfer.id,
    kind:
      TransferKindSchema.values.find((value) => value.number === transfer.kind)?.name ??
      String(transfer.kind),
    asset: transfer.money?.asset ?? "",
    amount: (transfer.money?.amount ?? 0n).toString(),
    reference: transfer.reference,
    createTime: transfer.createTime === undefined ? null : timestampDate(transfer.createTime).toISOString(),
  };
  const messages: ChannelMessage[] = [];
  const sides = [
    [transfer.debitOwner, "wallet.debited"],
    [transfer.creditOwner, "wallet.credited"],
  ] as const;
  for (const [owner, type] of sides) {
    if (owner.startsWith(userOwnerPrefix)) {
      messages.push({ kind: "user", id: owner.slice(userOwnerPrefix.length), type, data });
    }
  }
  return messages;
}

/** A battle as the REST API shows it (GET /api/pk/{id}): camelCase, 64-bit numbers as strings. */
const battleJson = (battle: Battle | undefined) =>
  battle === undefined
    ? {}
    : (toJson(BattleSchema, battle, { alwaysEmitImplicit: true }) as Record<string, unknown>);

/**
 * A battle's state change: on its own channel "pk:<id>", and, for its start and its result, on
 * the room channel of every participant, so a room's viewers see the battle begin and end.
 */
function battleMessages(type: BattleMessageType) {
  return (event: { battle?: Battle }): ChannelMessage[] => {
    const battle = event.battle;
    if (battle === undefined) return [];
    return [{ kind: "pk", id: battle.id, type, data: battleJson(battle) }];
  };
}

/** The start and the result of a battle also reach the room of every participant. */
function battleAndRoomMessages(type: BattleMessageType & MessageType<"room">) {
  return (event: { battle?: Battle; roomIds?: string[] }): ChannelMessage[] => {
    const battle = event.battle;
    if (battle === undefined) return [];
    const data = battleJson(battle);
    return [
      { kind: "pk", id: battle.id, type, data },
      ...(event.roomIds ?? []).map((roomId): ChannelMessage => ({ kind: "room", id: roomId, type, data })),
    ];
  };
}

/** An invitation reaches each invited host on their own "user" channel. */
export function battleInvitedMessages(event: { battle?: Battle }): ChannelMessage[] {
  const battle = event.battle;
  if (battle === undefined) return [];
  const data = battleJson(battle);
  return battle.participants
    .filter((p) => p.status === ParticipantStatus.INVITED)
    .map((p) => ({ kind: "user", id: p.hostId, type: "pk.invited", data }));
}

/** Live scores, at most 10 a second per battle (the PK service coalesces them). */
export function battleScoredMessages(event: BattleScored): ChannelMessage[] {
  return [
    {
      kind: "pk",
      id: event.battleId,
      type: "pk.scored",
      data: toJson(BattleScoredSchema, event, { alwaysEmitImplicit: true }) as Record<string, unknown>,
    },
  ];
}

/** A battle's live scores are ordered by the time the PK service claimed them (scoredTime). */
export function battleScoredOrder(event: BattleScored): { key: string; position: number } | undefined {
  if (event.scoredTime === undefined) return undefined;
  return { key: event.battleId, position: timestampDate(event.scoredTime).getTime() };
}

/** A campaign's counters, at most 10 a second (the discount service coalesces them). */
export function campaignChangedMessages(event: CampaignChanged): ChannelMessage[] {
  return [
    {
      kind: "campaign",
      id: event.campaignId,
      type: "campaign.changed",
      data: {
        campaignId: event.campaignId,
        redeemed: event.redeemed.toString(),
        remaining: event.remaining.toString(),
        status:
          CampaignStatusSchema.values.find((value) => value.number === event.status)?.name ??
          String(event.status),
        exhausted: event.exhausted,
      },
    },
  ];
}

/** An order's new status, on its buyer's own "user" channel. */
export function orderStatusMessages(event: OrderStatusChanged): ChannelMessage[] {
  const order = event.order;
  if (order === undefined) return [];
  return [
    {
      kind: "user",
      id: order.userId,
      type: "order.status",
      data: toJson(OrderSchema, order, { alwaysEmitImplicit: true }) as Record<string, unknown>,
    },
  ];
}

/**
 * A boost, live where it shows: a room's viewers see "room.boosted", a battle's viewers
 * "pk.boosted" with the side (the battle's own totals are on GET /api/pk/{id}). A host's
 * profile boost is told to the host through notifications, not on a public channel.
 */
export function boostMessages(event: BoostPurchased): ChannelMessage[] {
  const data = {
    boostId: event.boostId,
    buyerId: event.buyerId,
    targetId: event.targetId,
    amount: (event.money?.amount ?? 0n).toString(),
    durationHours: event.durationHours,
    expireTime: event.expireTime === undefined ? null : timestampDate(event.expireTime).toISOString(),
  };
  if (event.targetType === BoostTargetType.ROOM)
    return [{ kind: "room", id: event.targetId, type: "room.boosted", data }];
  if (event.targetType === BoostTargetType.PK_SIDE) {
    const [battleId, side] = event.targetId.split(":");
    if (battleId === undefined || side === undefined) return [];
    return [
      {
        kind: "pk",
        id: battleId.toLowerCase(),
        type: "pk.boosted",
        data: { ...data, battleId, side: side.toUpperCase() },
      },
    ];
  }
  return [];
}

export const feeds: readonly Feed[] = [
  feed({ stream: "GIFT", subject: "gift.gift.sent", schema: GiftSentSchema, messages: giftSentMessages }),
  feed({
    stream: "WALLET",
    // Every transfer: wallet.transfer.committed and wallet.transfer.credit.*.
    subject: "wallet.transfer.>",
    schema: TransferCommittedSchema,
    messages: transferMessages,
  }),
  feed({
    stream: "WALLET",
    subject: "wallet.boost.purchased",
    schema: BoostPurchasedSchema,
    messages: boostMessages,
  }),
  feed({
    stream: "PK",
    subject: "pk.battle.invited",
    schema: BattleInvitedSchema,
    messages: battleInvitedMessages,
  }),
  feed({
    stream: "PK",
    subject: "pk.battle.started",
    schema: BattleStartedSchema,
    messages: battleAndRoomMessages("pk.started"),
  }),
  feed({
    stream: "PK",
    subject: "pk.battle.scored",
    schema: BattleScoredSchema,
    messages: battleScoredMessages,
    order: battleScoredOrder,
  }),
  feed({
    stream: "PK",
    subject: "pk.battle.time_up",
    schema: BattleTimeUpSchema,
    messages: battleMessages("pk.time_up"),
  }),
  feed({
    stream: "PK",
    subject: "pk.battle.bonus_round",
    schema: BattleBonusRoundSchema,
    messages: battleMessages("pk.bonus_round"),
  }),
  feed({
    stream: "PK",
    subject: "pk.battle.ended",
    schema: BattleEndedSchema,
    messages: battleAndRoomMessages("pk.ended"),
  }),
  feed({
    stream: "PK",
    subject: "pk.battle.cancelled",
    schema: BattleCancelledSchema,
    messages: battleMessages("pk.cancelled"),
  }),
  feed({
    stream: "DISCOUNT",
    subject: "discount.campaign.changed",
    schema: CampaignChangedSchema,
    messages: campaignChangedMessages,
  }),
  feed({
    stream: "ORDER",
    subject: "order.order.status_changed",
    schema: OrderStatusChangedSchema,
    messages: orderStatusMessages,
  }),
];
