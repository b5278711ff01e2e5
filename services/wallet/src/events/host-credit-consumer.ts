// Credits hosts for GiftSent events, batched: one transaction per fetched batch, one transfer
// per host (gifts-in-transit → host) and one for the platform's revenue, so a hot host gets
// many gifts per row update instead of one. Idempotent per gift through the inbox.
//
// What is shared out is what the ledger took for the gift: the debit transfer that carried the
// GiftSent event, not the `total` the event claims. Each debit is recorded as settled, once
// (gift_settlements), so it can never be credited twice whatever announces it; an event that
// no debit carried was never paid for, can never succeed, and goes to the DLQ at once.
import { type ConsumerSpec, type ReceivedEvent, RejectedEventError } from "@ovation/events";
import { type GiftSent, GiftSentSchema } from "@ovation/proto/gen/ovation/gift/v1/events_pb.ts";
import type { Logger } from "pino";
import { type TransferCommand, transferAll } from "../app/transfer.ts";
import { systemAccounts, TransferKind, type TransferKindValue, userOwner } from "../domain/ledger.ts";
import type { Caller } from "../domain/policy.ts";
import { creditsOf, splitGift } from "../domain/revenue.ts";
import type { LedgerStore } from "../store/ledger-store.ts";

export const hostCreditConsumerName = "wallet-host-credit";
const wallet: Caller = { kind: "wallet" };

export function hostCreditConsumer(
  store: LedgerStore,
  hostShareBps: number,
  logger: Logger,
  overrides: Partial<ConsumerSpec<typeof GiftSentSchema>> = {},
) {
  return {
    name: hostCreditConsumerName,
    stream: "GIFT",
    subject: "gift.gift.sent",
    schema: GiftSentSchema,
    handle: async (em, events) => {
      const debits = await store.giftDebits(
        em,
        events.map((e) => e.eventId),
      );
      const paid = events.map((event) => {
        const debit = debits.get(event.eventId);
        if (debit === undefined) throw new RejectedEventError(`no gift debit carried event ${event.eventId}`);
        if (debit.amount !== event.message.total) warnMismatch(logger, event, debit.amount);
        return { event, debit };
      });
      const newlySettled = await store.settleGifts(
        em,
        paid.map(({ event, debit }) => {
          const split = splitGift(debit.amount, hostShareBps);
          return {
            giftTransferId: debit.transferId,
            hostId: event.message.hostId,
            amount: debit.amount,
            ...split,
          };
        }),
      );
      const due = paid.filter(({ debit }) => newlySettled.has(debit.transferId));
      if (due.length === 0) return;
      const batchId = events[0]!.eventId;
      const credits: TransferCommand[] = [];
      for (const [asset, gifts] of Map.groupBy(due, ({ debit }) => debit.asset)) {
        const { hosts, platform } = creditsOf(
          gifts.map(({ event, debit }) => ({ hostId: event.message.hostId, total: debit.amount })),
          hostShareBps,
        );
        const credit = (
          creditOwner: string,
          amount: bigint,
          kind: TransferKindValue,
          key: string,
          count: number,
        ) => ({
          caller: wallet,
          debitOwner: systemAccounts.giftsInTransit,
          creditOwner,
          asset,
          amount,
          kind,
          reference: `gifts:${batchId}`,
          metadata: { gifts: String(count) },
          idempotencyKey: `${key}:${batchId}:${asset}`,
        });
        for (const host of hosts) {
          if (host.amount === 0n) continue;
          credits.push(
            credit(
              userOwner(host.hostId),
              host.amount,
              TransferKind.EARN,
              `host-credit:${host.hostId}`,
              host.gifts,
            ),
          );
        }
        if (platform > 0n)
          credits.push(
            credit(systemAccounts.revenue, platform, TransferKind.REVENUE, "gift-revenue", gifts.length),
          );
      }
      // One call for the whole batch: each account, and each gifts-in-transit shard, once.
      await transferAll(store, credits, em);
    },
    ...overrides,
  } satisfies ConsumerSpec<typeof GiftSentSchema>;
}

function warnMismatch(logger: Logger, event: ReceivedEvent<GiftSent>, debited: bigint): void {
  logger.warn(
    { eventId: event.eventId, claimed: event.message.total.toString(), debited: debited.toString() },
    "GiftSent claims another total than its debit; crediting what was debited",
  );
}
