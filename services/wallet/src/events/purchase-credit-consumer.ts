// Credits the coins of coin packs: for every OrderCompleted with coins, one PURCHASE transfer
// from system:mint to the buyer, under the order service's own money policy (the event could only
// come from its outbox). Idempotent through the inbox and by the transfer's key.
import type { ConsumerSpec } from "@ovation/events";
import { OrderCompletedSchema } from "@ovation/proto/gen/ovation/order/v1/events_pb.ts";
import { type TransferCommand, transferAll } from "../app/transfer.ts";
import { systemAccounts, TransferKind, userOwner } from "../domain/ledger.ts";
import type { Caller } from "../domain/policy.ts";
import type { LedgerStore } from "../store/ledger-store.ts";

export const purchaseCreditConsumerName = "wallet-purchase-credit";
const order: Caller = { kind: "service", name: "order" };

export function purchaseCreditConsumer(
  store: LedgerStore,
  overrides: Partial<ConsumerSpec<typeof OrderCompletedSchema>> = {},
) {
  return {
    name: purchaseCreditConsumerName,
    stream: "ORDER",
    subject: "order.order.completed",
    schema: OrderCompletedSchema,
    handle: async (em, events) => {
      const credits: TransferCommand[] = events
        .filter(({ message }) => message.coins > 0n)
        .map(({ message }) => ({
          caller: order,
          debitOwner: systemAccounts.mint,
          creditOwner: userOwner(message.userId),
          asset: "COIN",
          amount: message.coins,
          kind: TransferKind.PURCHASE,
          reference: `order:${message.orderId}`,
          metadata: {},
          idempotencyKey: `order:${message.orderId}:coins`,
        }));
      if (credits.length > 0) await transferAll(store, credits, em);
    },
    ...overrides,
  } satisfies ConsumerSpec<typeof OrderCompletedSchema>;
}
