// Credits hosts for GiftSent events, batched: one transaction per fetched batch, one transfer
// per host (gifts-in-transit → host) and one for the platform's revenue, so a hot host gets
// many gifts per row update instead of one. Idempotent per gift through the inbox.
import type { ConsumerSpec } from "@ovation/events";
import { GiftSentSchema } from "@ovation/proto/gen/ovation/gift/v1/events_pb.ts";
import { transfer } from "../app/transfer.ts";
import { systemAccounts, TransferKind, userOwner } from "../domain/ledger.ts";
import { creditsOf } from "../domain/revenue.ts";
import type { LedgerStore } from "../store/ledger-store.ts";

export const hostCreditConsumerName = "wallet-host-credit";

export function hostCreditConsumer(
  store: LedgerStore,
  hostShareBps: number,
  overrides: Partial<ConsumerSpec<typeof GiftSentSchema>> = {},
) {
  return {
    name: hostCreditConsumerName,
    stream: "GIFT",
    subject: "gift.gift.sent",
    schema: GiftSentSchema,
    handle: async (em, events) => {
      const batchId = events[0]!.eventId;
      const { hosts, platform } = creditsOf(
        events.map((e) => ({ hostId: e.message.hostId, total: e.message.total })),
        hostShareBps,
      );
      for (const host of hosts) {
        if (host.amount === 0n) continue;
        await transfer(
          store,
          {
            debitOwner: systemAccounts.giftsInTransit,
            creditOwner: userOwner(host.hostId),
            asset: "COIN",
            amount: host.amount,
            kind: TransferKind.EARN,
            reference: `gifts:${batchId}`,
            metadata: { gifts: String(host.gifts) },
            idempotencyKey: `host-credit:${batchId}:${host.hostId}`,
          },
          em,
        );
      }
      if (platform > 0n) {
        await transfer(
          store,
          {
            debitOwner: systemAccounts.giftsInTransit,
            creditOwner: systemAccounts.revenue,
            asset: "COIN",
            amount: platform,
            kind: TransferKind.REVENUE,
            reference: `gifts:${batchId}`,
            metadata: { gifts: String(events.length) },
            idempotencyKey: `gift-revenue:${batchId}`,
          },
          em,
        );
      }
    },
    ...overrides,
  } satisfies ConsumerSpec<typeof GiftSentSchema>;
}
