// Use case: send a gift. Validate against the cached catalog and the room, claim the send
// (idempotency record + combo streak + the GiftSent payload), then one wallet transfer
// sender → gifts-in-transit that carries the GiftSent event: the debit and the event commit
// together in the wallet's database. A refused payment publishes nothing and undoes the claim.
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { type Client, Code, ConnectError } from "@connectrpc/connect";
import { type GiftSent, GiftSentSchema } from "@ovation/proto/gen/ovation/gift/v1/events_pb.ts";
import { TransferKind, type WalletService } from "@ovation/proto/gen/ovation/wallet/v1/wallet_pb.ts";
import { assertSendable, GiftError, giftErrorCodes } from "../domain/rules.ts";
import { type GiftStore, giftSubjects, type SendClaim } from "../store/gift-store.ts";
import type { CatalogCache } from "./catalog.ts";

export interface SendGiftDeps {
  store: GiftStore;
  catalog: CatalogCache;
  wallet: Client<typeof WalletService>;
  comboWindowMs: number;
}

export interface SendGiftCommand {
  senderId: string;
  vipLevel: number;
  roomId: string;
  giftId: string;
  count: number;
  idempotencyKey: string;
  signal?: AbortSignal;
  timeoutMs?: number;
}

export interface SendGiftResult {
  gift: GiftSent;
  balance: bigint;
}

export async function sendGift(deps: SendGiftDeps, command: SendGiftCommand): Promise<SendGiftResult> {
  const gift = deps.catalog.get(command.giftId);
  const room = await deps.store.room(command.roomId);
  assertSendable(gift, room ?? undefined, command.senderId, command.vipLevel);
  const request = command;
  const claim = await deps.store.claimSend(request, deps.comboWindowMs, ({ id, combo, createdAt }) =>
    toBinary(
      GiftSentSchema,
      create(GiftSentSchema, {
        sendId: id,
        senderId: command.senderId,
        hostId: room!.hostId,
        roomId: command.roomId,
        giftId: gift!.id,
        giftName: gift!.name,
        animationKey: gift!.animationKey,
        count: command.count,
        unitPrice: gift!.price,
        total: gift!.price * BigInt(command.count),
        pkPoints: gift!.pkPoints * BigInt(command.count),
        combo,
        sendTime: timestampFromDate(createdAt),
        senderVipLevel: command.vipLevel,
      }),
    ),
  );
  const event = fromClaim(claim);
  try {
    const paid = await deps.wallet.transfer(
      {
        debitOwner: `user:${command.senderId}`,
        creditOwner: "system:gifts-in-transit",
        money: { asset: "COIN", amount: event.total },
        kind: TransferKind.GIFT,
        reference: claim.id,
        metadata: { room: event.roomId, gift: event.giftId },
        idempotencyKey: `send:${claim.id}`,
        event: {
          eventId: claim.id,
          subject: giftSubjects.sent,
          type: GiftSentSchema.typeName,
          payload: claim.event,
        },
      },
      { signal: command.signal, timeoutMs: command.timeoutMs },
    );
    return { gift: event, balance: paid.debitBalance };
  } catch (error) {
    const refused = ConnectError.from(error);
    // Only a definite refusal undoes the claim; after a timeout the money may have moved, and
    // a retry with the same key must find the same claim.
    if (refused.code === Code.FailedPrecondition && !claim.existing) {
      await deps.store.releaseSend(request, claim);
      throw new GiftError(
        giftErrorCodes.insufficientBalance,
        `insufficient balance: ${event.total} COIN needed`,
      );
    }
    throw error;
  }
}

/** The send as claimed the first time (a retry may come after a catalog change). */
const fromClaim = (claim: SendClaim): GiftSent => fromBinary(GiftSentSchema, claim.event);
