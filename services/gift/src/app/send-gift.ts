// Use case: send a gift, in one gift-database round trip plus one wallet call (each of them
// group-committed with the other sends in flight: store/gift-store.ts, clients/wallet.ts).
// 1. Refuse early from the cached catalog and rooms (no I/O). A send refused here may be the
//    retry of one already paid for, so a refusal first looks for an earlier claim of the key
//    (one more round trip, on refusals only) and answers with it when there is one.
// 2. Claim it (claim_send: idempotency record, authoritative "room is live", combo streak and
//    the payload's fields, in one call). A retry with the same key gets the first claim.
// 3. One wallet transfer sender → gifts-in-transit that carries the GiftSent event, built
//    from the claim so a retry sends the same bytes, with the sender's own token as their
//    consent: the debit and the event commit together in the wallet's database.
// A claim is never undone: its id is the wallet transfer's key, so every attempt under the
// claim (a retry while the first is still paying, a retry after a refusal once coins arrived)
// pays at most once. Deleting a refused claim while a retry may be paying under it would let a
// third attempt claim afresh and pay again under a new id (docs/decisions/0004, 0028).
import { create, toBinary } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { type GiftSent, GiftSentSchema } from "@ovation/proto/gen/ovation/gift/v1/events_pb.ts";
import { TransferKind } from "@ovation/proto/gen/ovation/wallet/v1/wallet_pb.ts";
import { traceHeaders } from "@ovation/server";
import { GiftError, sendRefusal } from "../domain/rules.ts";
import type { CatalogCache } from "./catalog.ts";
import { giftSubjects } from "./messages.ts";
import type { GiftPayments, SendClaim, SendClaims } from "./ports.ts";
import type { RoomCache } from "./rooms.ts";

export interface SendGiftDeps {
  store: SendClaims;
  catalog: CatalogCache;
  rooms: RoomCache;
  payments: GiftPayments;
}

export interface SendGiftCommand {
  senderId: string;
  vipLevel: number;
  roomId: string;
  giftId: string;
  count: number;
  idempotencyKey: string;
  /** The sender's own bearer token, passed to the wallet as their consent to pay. */
  consentToken: string;
}

export interface SendGiftResult {
  gift: GiftSent;
  balance: bigint;
}

export async function sendGift(deps: SendGiftDeps, command: SendGiftCommand): Promise<SendGiftResult> {
  const claim = await claimOrRefuse(deps, command);
  const event = giftSentOf(claim, command.senderId);
  const payload = claim.event ?? toBinary(GiftSentSchema, event);
  const paid = await deps.payments.transfer({
    debitOwner: `user:${command.senderId}`,
    consentToken: command.consentToken,
    creditOwner: "system:gifts-in-transit",
    money: { asset: "COIN", amount: event.total },
    kind: TransferKind.GIFT,
    reference: claim.id,
    metadata: { room: event.roomId, gift: event.giftId },
    idempotencyKey: `send:${claim.id}`,
    // The event keeps the trace of this send's request, though it travels in a batch.
    event: {
      eventId: claim.id,
      subject: giftSubjects.sent,
      type: GiftSentSchema.typeName,
      payload,
      headers: traceHeaders(),
    },
  });
  if ("refused" in paid) {
    // The claim stays: a retry with the same key tries the same payment again.
    throw new GiftError("insufficient_balance", `insufficient balance: ${event.total} COIN needed`);
  }
  // The wallet stamped the published GiftSent with its debit's journal time; answer the same.
  if (paid.paid.transfer?.createTime !== undefined) event.sendTime = paid.paid.transfer.createTime;
  return { gift: event, balance: paid.paid.debitBalance };
}

async function claimOrRefuse(deps: SendGiftDeps, command: SendGiftCommand): Promise<SendClaim> {
  const gift = deps.catalog.get(command.giftId);
  const refusal = sendRefusal(gift, deps.rooms.get(command.roomId), command.senderId, command.vipLevel);
  if (refusal !== undefined) {
    const earlier = await deps.store.earlierClaim(command);
    if (earlier === undefined) throw refusal;
    return earlier;
  }
  return deps.store.claimSend(command, {
    giftName: gift!.name,
    unitPrice: gift!.price,
    pkPoints: gift!.pkPoints,
    animationKey: gift!.animationKey,
    senderVipLevel: command.vipLevel,
  });
}

/** The GiftSent a claim stands for; the same claim always gives the same message. */
function giftSentOf(claim: SendClaim, senderId: string): GiftSent {
  return create(GiftSentSchema, {
    sendId: claim.id,
    senderId,
    hostId: claim.hostId,
    roomId: claim.roomId,
    giftId: claim.giftId,
    giftName: claim.giftName,
    animationKey: claim.animationKey,
    count: claim.count,
    unitPrice: claim.unitPrice,
    total: claim.unitPrice * BigInt(claim.count),
    pkPoints: claim.pkPoints * BigInt(claim.count),
    combo: claim.combo,
    sendTime: timestampFromDate(claim.createdAt),
    senderVipLevel: claim.senderVipLevel,
  });
}
