// Ledger records as protobuf messages: the API's responses and the events' payloads.
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { eventOf, type OutboxEvent } from "@ovation/events";
import { GiftSentSchema } from "@ovation/proto/gen/ovation/gift/v1/events_pb.ts";
import { TransferCommittedSchema } from "@ovation/proto/gen/ovation/wallet/v1/events_pb.ts";
import {
  type Hold,
  HoldSchema,
  type Transfer,
  TransferSchema,
} from "@ovation/proto/gen/ovation/wallet/v1/wallet_pb.ts";
import type { TransferFields } from "../domain/ledger.ts";

/** A committed transfer: what was asked (without the carried event), its id and time. */
export interface TransferRecord extends Omit<TransferFields, "event" | "holdId"> {
  id: string;
  holdId?: string | null | undefined;
  createdAt: Date;
}

export interface HoldRecord {
  id: string;
  owner: string;
  asset: string;
  amount: bigint;
  status: number;
  reference: string;
  capturedAmount: bigint;
  expiresAt: Date;
  createdAt: Date;
}

export const transferCommittedSubject = "wallet.transfer.committed";

export function transferMessage(record: TransferRecord): Transfer {
  return create(TransferSchema, {
    id: record.id,
    debitOwner: record.debitOwner,
    creditOwner: record.creditOwner,
    money: { asset: record.asset, amount: record.amount },
    kind: record.kind as Transfer["kind"],
    reference: record.reference,
    metadata: record.metadata,
    holdId: record.holdId ?? "",
    createTime: timestampFromDate(record.createdAt),
  });
}

export function holdMessage(record: HoldRecord): Hold {
  return create(HoldSchema, {
    id: record.id,
    owner: record.owner,
    money: { asset: record.asset, amount: record.amount },
    status: record.status as Hold["status"],
    reference: record.reference,
    capturedAmount: record.capturedAmount,
    expireTime: timestampFromDate(record.expiresAt),
    createTime: timestampFromDate(record.createdAt),
  });
}

/** wallet.transfer.committed: every movement of money, for notifications and read models. */
export function transferCommittedEvent(record: TransferRecord): OutboxEvent {
  return eventOf(
    TransferCommittedSchema,
    create(TransferCommittedSchema, { transfer: transferMessage(record) }),
    transferCommittedSubject,
  );
}

/**
 * A carried GiftSent says when its debit committed: the transfer's journal time, which only
 * the wallet knows (the gift service built the event before the batch it went into). PK
 * battles score gifts by this time. Other events are published as the caller sent them.
 */
export function stampCommitTime(event: OutboxEvent, committedAt: Date): OutboxEvent {
  if (event.type !== GiftSentSchema.typeName) return event;
  const gift = fromBinary(GiftSentSchema, event.payload);
  gift.sendTime = timestampFromDate(committedAt);
  return { ...event, payload: toBinary(GiftSentSchema, gift) };
}
