// Credits the coins of coin packs: for every OrderCompleted with coins, one PURCHASE transfer
// from system:mint to the buyer, made by the wallet itself against the card processor's signed
// payment that the event carries (app/purchases.ts). Idempotent through the inbox and by the
// charge (one mint per card payment); an event whose payment does not check out is
// dead-lettered with the reason and mints nothing.
import type { ConsumerSpec } from "@ovation/events";
import { OrderCompletedSchema } from "@ovation/proto/gen/ovation/order/v1/events_pb.ts";
import { mintCardPurchases, type PurchaseSettings } from "../app/purchases.ts";
import type { FactStore } from "../store/fact-store.ts";
import type { LedgerStore } from "../store/ledger-store.ts";

export const purchaseCreditConsumerName = "wallet-purchase-credit";

export function purchaseCreditConsumer(
  store: LedgerStore,
  facts: FactStore,
  settings: PurchaseSettings,
  overrides: Partial<ConsumerSpec<typeof OrderCompletedSchema>> = {},
) {
  return {
    name: purchaseCreditConsumerName,
    stream: "ORDER",
    subject: "order.order.completed",
    schema: OrderCompletedSchema,
    handle: (em, events) => mintCardPurchases(store, facts, settings, em, events),
    ...overrides,
  } satisfies ConsumerSpec<typeof OrderCompletedSchema>;
}
