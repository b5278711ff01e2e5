// Ledger records as protobuf messages: the API's responses and the events' payloads.
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { eventOf, type OutboxEvent } from "@ovation/events";
import { GiftSentSchema } from "@ovation/proto/gen/ovation/gift/v1/events_pb.ts";
import {
  BoostPurchasedSchema,
  type CreditEvent,
  CreditEventKind,
  CreditEventSchema,
  TransferCommittedSchema,
} from "@ovation/proto/gen/ovation/wallet/v1/events_pb.ts";
import {
  type Hold,
  HoldSchema,
  type Transfer,
  TransferSchema,
} from "@ovation/proto/gen/ovation/wallet/v1/wallet_pb.ts";
import { isUserOwner, systemAccounts, type TransferFields, TransferKind } from "../domain/ledger.ts";

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
  refundedAmount?: bigint | undefined;
  expiresAt: Date;
  createdAt: Date;
}

export const transferCommittedSubject = "wallet.transfer.committed";
export const boostPurchasedSubject = "wallet.boost.purchased";

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
    refundedAmount: record.refundedAmount ?? 0n,
    expireTime: timestampFromDate(record.expiresAt),
    createTime: timestampFromDate(record.createdAt),
  });
}

export const creditSubjects = {
  [CreditEventKind.PURCHASED]: "wallet.transfer.credit.purchased",
  [CreditEventKind.SPENT]: "wallet.transfer.credit.spent",
  [CreditEventKind.EARNED]: "wallet.transfer.credit.earned",
} as const;

/** The credit event each transfer kind makes, for the user on its `side` of the transfer. */
const creditRules: Partial<Record<number, { kind: keyof typeof creditSubjects; side: "debit" | "credit" }>> =
  {
    [TransferKind.MINT]: { kind: CreditEventKind.PURCHASED, side: "credit" },
    [TransferKind.PURCHASE]: { kind: CreditEventKind.PURCHASED, side: "credit" },
    [TransferKind.GIFT]: { kind: CreditEventKind.SPENT, side: "debit" },
    [TransferKind.SPEND]: { kind: CreditEventKind.SPENT, side: "debit" },
    [TransferKind.EARN]: { kind: CreditEventKind.EARNED, side: "credit" },
    [TransferKind.PROMOTION]: { kind: CreditEventKind.EARNED, side: "credit" },
    [TransferKind.REFUND]: { kind: CreditEventKind.EARNED, side: "credit" },
  };

/**
 * The credit event a transfer is, if it is one. A hold's capture is paid from system:holds:
 * the user who spent is the hold's owner, `payer`.
 */
export function creditOf(record: TransferRecord, payer?: string): CreditEvent | undefined {
  const rule = creditRules[record.kind];
  if (rule === undefined) return undefined;
  const owner =
    rule.side === "credit"
      ? record.creditOwner
      : record.debitOwner === systemAccounts.holds
        ? payer
        : record.debitOwner;
  if (owner === undefined || !isUserOwner(owner)) return undefined;
  return create(CreditEventSchema, {
    kind: rule.kind,
    userId: owner.slice("user:".length),
    money: { asset: record.asset, amount: record.amount },
    reason: record.kind as Transfer["kind"],
    transferId: record.id,
    reference: record.reference,
    time: timestampFromDate(record.createdAt),
  });
}

/**
 * Every movement of money, once, for notifications and read models: on
 * wallet.transfer.credit.<kind> with its credit event when it is one, else on
 * wallet.transfer.committed (so wallet.transfer.> is every transfer).
 */
export function transferCommittedEvent(record: TransferRecord, payer?: string): OutboxEvent {
  const credit = creditOf(record, payer);
  return eventOf(
    TransferCommittedSchema,
    create(TransferCommittedSchema, { transfer: transferMessage(record), credit }),
    credit === undefined
      ? transferCommittedSubject
      : creditSubjects[credit.kind as keyof typeof creditSubjects],
  );
}

/**
 * Why a carried event does not describe its transfer, or undefined when it does: a
 * BoostPurchased must name the account that pays, the money paid and the revenue account, so
 * no caller can announce a boost nobody paid for.
 */
export function refuseCarriedEvent(transfer: TransferFields, event: OutboxEvent): string | undefined {
  const isBoost = event.type === BoostPurchasedSchema.typeName;
  if (isBoost !== (event.subject === boostPurchasedSubject))
    return `${boostPurchasedSubject} carries BoostPurchased, and BoostPurchased nothing else`;
  if (!isBoost) return undefined;
  let boost: ReturnType<typeof fromBinary<typeof BoostPurchasedSchema>>;
  try {
    boost = fromBinary(BoostPurchasedSchema, event.payload);
  } catch {
    return "the BoostPurchased event does not decode";
  }
  const matches =
    transfer.kind === TransferKind.SPEND &&
    transfer.creditOwner === systemAccounts.revenue &&
    transfer.debitOwner === `user:${boost.buyerId}` &&
    boost.money?.asset === transfer.asset &&
    boost.money.amount === transfer.amount &&
    boost.boostId === event.eventId;
  return matches ? undefined : "the BoostPurchased event does not match its payment";
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
