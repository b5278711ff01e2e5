// The catalogue of channel messages: for every channel kind, each message `type` it carries and
// the shape of its `data`. It is the one description of the socket's payloads: the feeds are
// typed against it (a feed that builds other data does not compile), and the OpenAPI document
// publishes it (ws/document.ts), from which clients generate their message types
// (packages/client). Data is either a proto message in its JSON form (the battle exactly as
// GET /api/pk/{id} shows it) or a zod schema for data the gateway shapes itself. As in the REST
// API's JSON: camelCase names, 64-bit integers as decimal strings, times as RFC 3339.
import type { DescMessage } from "@bufbuild/protobuf";
import { z } from "@ovation/config";
import { OrderSchema } from "@ovation/proto/gen/ovation/order/v1/order_pb.ts";
import { BattleScoredSchema } from "@ovation/proto/gen/ovation/pk/v1/events_pb.ts";
import { BattleSchema } from "@ovation/proto/gen/ovation/pk/v1/pk_pb.ts";
import { notificationTypes } from "../domain/notifications.ts";
import type { ChannelKindName } from "./channels.ts";

/** Data in the proto3 JSON form of a message (toJson with every implicit field emitted). */
export interface ProtoData {
  proto: DescMessage;
}

export type DataSchema = z.ZodType | ProtoData;

const int64 = z
  .string()
  .regex(/^-?[0-9]+$/)
  .meta({ format: "int64" });
const time = z.string().meta({ format: "date-time" });

const giftSent = z
  .strictObject({
    sendId: z.string(),
    senderId: z.string(),
    hostId: z.string(),
    roomId: z.string(),
    giftId: z.string(),
    giftName: z.string(),
    animationKey: z.string(),
    count: z.number().int(),
    combo: z.number().int().describe("Position in the sender's combo streak, 1 for a first gift."),
    total: int64.describe("COIN minor units: price × count."),
    sendTime: time.nullable().describe("When the wallet committed the debit."),
  })
  .describe("A gift sent in the room: what a client needs to animate it.");

const boost = {
  boostId: z.string(),
  buyerId: z.string(),
  targetId: z.string(),
  amount: int64.describe("COIN minor units paid."),
  durationHours: z.number().int(),
  expireTime: time.nullable(),
};
const roomBoosted = z.strictObject(boost).describe("Someone boosted the room.");
const pkBoosted = z
  .strictObject({ ...boost, battleId: z.string(), side: z.string().describe("A or B.") })
  .describe("Someone boosted a side of the battle; the battle's totals are on GET /api/pk/{battleId}.");

const walletTransfer = z
  .strictObject({
    transferId: z.string(),
    kind: z.string().describe("The TransferKind name, for example TRANSFER_KIND_GIFT."),
    asset: z.string(),
    amount: int64.describe("Minor units of the asset."),
    reference: z.string(),
    createTime: time.nullable(),
  })
  .describe("A transfer that debited or credited the caller's wallet.");

const campaignChanged = z
  .strictObject({
    campaignId: z.string(),
    redeemed: int64,
    remaining: int64,
    status: z.string().describe("The CampaignStatus name, for example CAMPAIGN_STATUS_ACTIVE."),
    exhausted: z.boolean(),
  })
  .describe("A campaign's live counters.");

/** A stored notification, as GET /api/notifications lists it and the `user` channel pushes it. */
export const notificationSchema = z
  .strictObject({
    id: z.uuid().describe("The same for the same boost or transfer."),
    type: z.enum(Object.values(notificationTypes)),
    text: z.string().describe("What happened, in English."),
    data: z
      .record(z.string(), z.union([z.string(), z.number(), z.null()]))
      .describe(
        "Details by type. boost.received: boostId, buyerId, targetType, targetId, asset, amount, durationHours, startTime, expireTime. credit.*: transferId, kind, reason, asset, amount, reference, time.",
      ),
    createTime: time.describe("When it happened."),
  })
  .describe("A notification, as listed and as pushed on the `user` channel.");

/** Data schemas by the name the OpenAPI document gives them (`ws.<name>`, Notification as is). */
export const namedDataSchemas = {
  "ws.GiftSent": giftSent,
  "ws.RoomBoosted": roomBoosted,
  "ws.PkBoosted": pkBoosted,
  "ws.WalletTransfer": walletTransfer,
  "ws.CampaignChanged": campaignChanged,
  Notification: notificationSchema,
} as const;

const battle: ProtoData = { proto: BattleSchema };

export const channelMessages = {
  room: {
    "gift.sent": giftSent,
    "pk.started": battle,
    "pk.ended": battle,
    "room.boosted": roomBoosted,
  },
  user: {
    "wallet.debited": walletTransfer,
    "wallet.credited": walletTransfer,
    "pk.invited": battle,
    "order.status": { proto: OrderSchema },
    notification: notificationSchema,
  },
  pk: {
    "pk.started": battle,
    "pk.time_up": battle,
    "pk.bonus_round": battle,
    "pk.ended": battle,
    "pk.cancelled": battle,
    "pk.scored": { proto: BattleScoredSchema },
    "pk.boosted": pkBoosted,
  },
  campaign: {
    "campaign.changed": campaignChanged,
  },
} as const satisfies Record<ChannelKindName, Record<string, DataSchema>>;

type Catalogue = typeof channelMessages;
type DataOf<Schema> = Schema extends z.ZodType ? z.output<Schema> : Record<string, unknown>;

/** The message types a channel kind carries. */
export type MessageType<Kind extends ChannelKindName> = keyof Catalogue[Kind] & string;

/** One message for the subscribers of a channel, before it is framed. */
export type ChannelMessage = {
  [Kind in ChannelKindName]: {
    [Type in MessageType<Kind>]: {
      kind: Kind;
      /** Entity id for public kinds, user id for own kinds. */
      id: string;
      /** "<domain>.<what happened>", for example "gift.sent". */
      type: Type;
      data: DataOf<Catalogue[Kind][Type]>;
      /**
       * What the message is worth when a room frame is full (fan-out.ts): the lowest are left
       * out first. Absent: never left out for one that has it (a battle starting, a boost).
       */
      priority?: number;
    };
  }[MessageType<Kind>];
}[ChannelKindName];
