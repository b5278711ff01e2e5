// Feeds: which JetStream subject carries which channel messages, and how an event becomes
// them. Pure mapping, no I/O; consumers.ts runs one consumer per feed. Data fields are named in
// camelCase and 64-bit amounts are strings, as in the REST API's JSON.
import type { DescMessage, MessageShape } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import type { Domain } from "@ovation/events";
import { type GiftSent, GiftSentSchema } from "@ovation/proto/gen/ovation/gift/v1/events_pb.ts";
import {
  type TransferCommitted,
  TransferCommittedSchema,
} from "@ovation/proto/gen/ovation/wallet/v1/events_pb.ts";
import { TransferKindSchema } from "@ovation/proto/gen/ovation/wallet/v1/wallet_pb.ts";
import type { ChannelKindName } from "./channels.ts";

export interface ChannelMessage {
  kind: ChannelKindName;
  /** Entity id for public kinds, user id for own kinds. */
  id: string;
  /** Message type, "<domain>.<what happened>", for example "gift.sent". */
  type: string;
  data: Record<string, unknown>;
}

export interface Feed<Desc extends DescMessage = DescMessage> {
  /** Stream and subject without the deployment prefix. */
  stream: Domain;
  subject: string;
  schema: Desc;
  messages(event: MessageShape<Desc>): ChannelMessage[];
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

export const feeds: readonly Feed[] = [
  feed({ stream: "GIFT", subject: "gift.gift.sent", schema: GiftSentSchema, messages: giftSentMessages }),
  feed({
    stream: "WALLET",
    subject: "wallet.transfer.committed",
    schema: TransferCommittedSchema,
    messages: transferMessages,
  }),
];
