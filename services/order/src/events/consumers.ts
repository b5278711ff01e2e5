// The order service's durable consumers, one per subject, grouped by module: the inventory
// module (reserve, release, commit), the orchestrator (inventory and payment answers) and the
// payment module (pay, refund). Each is effectively once through its inbox, and each handler
// is a transition that checks the state it expects.
import type { DescMessage, MessageShape } from "@bufbuild/protobuf";
import type { EntityManager } from "@ovation/db";
import type { ConsumerSpec } from "@ovation/events";
import { enqueueEvents } from "@ovation/events";
import {
  InventoryFailedSchema,
  InventoryReservedSchema,
  OrderCompletedSchema,
  OrderCreatedSchema,
  OrderFailedSchema,
  PaymentFailedSchema,
  PaymentRequestedSchema,
  PaymentSucceededSchema,
  RefundRequestedSchema,
} from "@ovation/proto/gen/ovation/order/v1/events_pb.ts";
import type { Inventory } from "../app/inventory.ts";
import { orderEvents, orderSubjects } from "../app/messages.ts";
import { type OrderDeps, saga } from "../app/orders.ts";
import type { Payments } from "../app/payments.ts";

type Settings = Partial<Pick<ConsumerSpec<DescMessage>, "retryBackoffMs" | "ackWaitMs" | "batchMax">>;

/** A consumer of one ORDER subject that applies a batch's events in turn, in its transaction. */
function perEvent<Desc extends DescMessage>(
  name: string,
  subject: string,
  schema: Desc,
  settings: Settings,
  apply: (em: EntityManager, message: MessageShape<Desc>) => Promise<void>,
): ConsumerSpec<Desc> {
  return {
    name,
    stream: "ORDER",
    subject,
    schema,
    handle: async (em, events) => {
      for (const { message } of events) await apply(em, message);
    },
    ...settings,
  };
}

export function inventoryConsumers(inventory: Inventory, settings: Settings) {
  return [
    {
      name: "inventory-reserve",
      stream: "ORDER",
      subject: orderSubjects.created,
      schema: OrderCreatedSchema,
      handle: async (em, events) => {
        const answers = [];
        for (const { message } of events) {
          const lines = message.lines
            .filter((l) => l.limited)
            .map((l) => ({ productId: l.productId, quantity: BigInt(l.quantity) }));
          const outcome = await inventory.reserve(em, message.orderId, lines);
          answers.push(
            outcome.reserved
              ? orderEvents.inventoryReserved(message.orderId)
              : orderEvents.inventoryFailed(message.orderId, outcome.reason),
          );
        }
        await enqueueEvents(em, answers);
      },
      ...settings,
    } satisfies ConsumerSpec<typeof OrderCreatedSchema>,
    perEvent("inventory-release", orderSubjects.failed, OrderFailedSchema, settings, (em, m) =>
      inventory.release(em, m.orderId),
    ),
    perEvent("inventory-commit", orderSubjects.completed, OrderCompletedSchema, settings, (em, m) =>
      inventory.commit(em, m.orderId),
    ),
  ];
}

export function sagaConsumers(deps: OrderDeps, settings: Settings) {
  return [
    perEvent(
      "order-inventory-reserved",
      orderSubjects.inventoryReserved,
      InventoryReservedSchema,
      settings,
      (em, m) => saga.inventoryReserved(deps, em, m.orderId),
    ),
    perEvent(
      "order-inventory-failed",
      orderSubjects.inventoryFailed,
      InventoryFailedSchema,
      settings,
      (em, m) => saga.inventoryFailed(deps, em, m.orderId, m.reason),
    ),
    perEvent(
      "order-payment-succeeded",
      orderSubjects.paymentSucceeded,
      PaymentSucceededSchema,
      settings,
      (em, m) => saga.paymentSucceeded(deps, em, m.orderId, m.reference),
    ),
    perEvent("order-payment-failed", orderSubjects.paymentFailed, PaymentFailedSchema, settings, (em, m) =>
      saga.paymentFailed(deps, em, m.orderId, m.reason),
    ),
  ];
}

export function paymentConsumers(payments: Payments, settings: Settings) {
  return [
    {
      name: "payment-pay",
      stream: "ORDER",
      subject: orderSubjects.paymentRequested,
      schema: PaymentRequestedSchema,
      // A batch's payments run side by side, so a card's latency is paid once per batch; a batch
      // that fails part-way is paid again by key, which changes nothing that was paid.
      handle: async (em, events) => {
        const outcomes = await Promise.all(
          events.map(({ message }) =>
            payments.pay({
              orderId: message.orderId,
              userId: message.userId,
              method: message.method,
              asset: message.amount?.asset ?? "",
              amount: message.amount?.amount ?? 0n,
            }),
          ),
        );
        await enqueueEvents(
          em,
          outcomes.map((outcome, i) => {
            const orderId = events[i]!.message.orderId;
            return outcome.paid
              ? orderEvents.paymentSucceeded(orderId, outcome.reference)
              : orderEvents.paymentFailed(orderId, outcome.reason);
          }),
        );
      },
      ...settings,
    } satisfies ConsumerSpec<typeof PaymentRequestedSchema>,
    {
      name: "payment-refund",
      stream: "ORDER",
      subject: orderSubjects.refundRequested,
      schema: RefundRequestedSchema,
      handle: async (_em, events) => {
        for (const { message } of events)
          await payments.refund({
            orderId: message.orderId,
            userId: message.userId,
            method: message.method,
            asset: message.amount?.asset ?? "",
            amount: message.amount?.amount ?? 0n,
          });
      },
      ...settings,
    } satisfies ConsumerSpec<typeof RefundRequestedSchema>,
  ];
}
