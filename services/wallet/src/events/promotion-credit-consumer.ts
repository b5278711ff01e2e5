// Credits discount redemptions: for every RedemptionRecorded the discount service published,
// one PROMOTION transfer from system:promotions to the user, under the discount service's own
// money policy (the event could only come from its outbox). Idempotent twice over: through the
// inbox, and by the transfer's key, the redemption id. A batch is one post_transfers call.
import type { ConsumerSpec } from "@ovation/events";
import { RedemptionRecordedSchema } from "@ovation/proto/gen/ovation/discount/v1/events_pb.ts";
import { type TransferCommand, transferAll } from "../app/transfer.ts";
import { systemAccounts, TransferKind, userOwner } from "../domain/ledger.ts";
import type { Caller } from "../domain/policy.ts";
import type { LedgerStore } from "../store/ledger-store.ts";

export const promotionCreditConsumerName = "wallet-promotion-credit";
const discount: Caller = { kind: "service", name: "discount" };

/** The idempotency key, and the reference the discount service recognises its credits by. */
export const redemptionReference = (redemptionId: string) => `discount:${redemptionId}`;

export function promotionCreditConsumer(
  store: LedgerStore,
  overrides: Partial<ConsumerSpec<typeof RedemptionRecordedSchema>> = {},
) {
  return {
    name: promotionCreditConsumerName,
    stream: "DISCOUNT",
    subject: "discount.redemption.recorded",
    schema: RedemptionRecordedSchema,
    handle: async (em, events) => {
      const credits: TransferCommand[] = events.map(({ message }) => ({
        caller: discount,
        debitOwner: systemAccounts.promotions,
        creditOwner: userOwner(message.userId),
        asset: message.money?.asset ?? "",
        amount: message.money?.amount ?? 0n,
        kind: TransferKind.PROMOTION,
        reference: redemptionReference(message.redemptionId),
        metadata: { campaign: message.campaignId, position: String(message.position) },
        idempotencyKey: redemptionReference(message.redemptionId),
      }));
      await transferAll(store, credits, em);
    },
    ...overrides,
  } satisfies ConsumerSpec<typeof RedemptionRecordedSchema>;
}
