// Credits discount redemptions: for every RedemptionRecorded the discount service published,
// one PROMOTION transfer from system:promotions to the user, paid out of the budget an admin
// funded for the campaign (app/promotions.ts). Idempotent twice over: through the inbox, and by
// the redemption id (one credit per redemption, whatever event names it). A batch is one
// post_transfers call; an event with no budget behind it is dead-lettered with the reason.
import type { ConsumerSpec } from "@ovation/events";
import { RedemptionRecordedSchema } from "@ovation/proto/gen/ovation/discount/v1/events_pb.ts";
import { payPromotionCredits } from "../app/promotions.ts";
import type { FactStore } from "../store/fact-store.ts";
import type { LedgerStore } from "../store/ledger-store.ts";

export { redemptionReference } from "../app/promotions.ts";

export const promotionCreditConsumerName = "wallet-promotion-credit";

export function promotionCreditConsumer(
  store: LedgerStore,
  facts: FactStore,
  overrides: Partial<ConsumerSpec<typeof RedemptionRecordedSchema>> = {},
) {
  return {
    name: promotionCreditConsumerName,
    stream: "DISCOUNT",
    subject: "discount.redemption.recorded",
    schema: RedemptionRecordedSchema,
    handle: (em, events) => payPromotionCredits(store, facts, em, events),
    ...overrides,
  } satisfies ConsumerSpec<typeof RedemptionRecordedSchema>;
}
