// The order service's durable consumers, one per subject, grouped by module: the inventory
// module (reserve, release, commit), the orchestrator (inventory and payment answers) and the
// payment module (pay, refund). Each is effectively once through its inbox, and each handler
// is a transition that checks the state it expects.
import type { DescMessage } from "@bufbuild/protobuf";
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
    {
      name: "inventory-release",
      stream: "ORDER",
      subject: orderSubjects.failed,
      schema: OrderFailedSchema,
      handle: async (em, events) => {
        for (const { message } of events) await inventory.release(em, message.orderId);
      },
      ...settings,
    } satisfies ConsumerSpec<typeof OrderFailedSchema>,
    {
      name: "inventory-commit",
      stream: "ORDER",
      subject: orderSubjects.completed,
      schema: OrderCompletedSchema,
      handle: async (em, events) => {
        for (const { message } of events) await inventory.commit(em, message.orderId);
      },
      ...settings,
    } satisfies ConsumerSpec<typeof OrderCompletedSchema>,
  ];
}

export function sagaConsumers(deps: OrderDeps, settings: Settings) {
  return [
    {
      name: "order-inventory-reserved",
      stream: "ORDER",
      subject: orderSubjects.inventoryReserved,
      schema: InventoryReservedSchema,
      handle: async (em, events) => {
        for (const { message } of events) await saga.inventoryReserved(deps, em, message.orderId);
      },
      ...settings,
    } satisfies ConsumerSpec<typeof InventoryReservedSchema>,
    {
      name: "order-inventory-failed",
      stream: "ORDER",
      subject: orderSubjects.inventoryFailed,
      schema: InventoryFailedSchema,
      handle: async (em, events) => {
        for (const { message } of events)
          await saga.inventoryFailed(deps, em, message.orderId, message.reason);
      },
      ...settings,
    } satisfies ConsumerSpec<typeof InventoryFailedSchema>,
    {
      name: "order-payment-succeeded",
      stream: "ORDER",
      subject: orderSubjects.paymentSucceeded,
      schema: PaymentSucceededSchema,
      handle: async (em, events) => {
        for (const { message } of events)
          await saga.paymentSucceeded(deps, em, message.orderId, message.reference);
      },
      ...settings,
    } satisfies ConsumerSpec<typeof PaymentSucceededSchema>,
    {
      name: "order-payment-failed",
      stream: "ORDER",
      subject: orderSubjects.paymentFailed,
      schema: PaymentFailedSchema,
      handle: async (em, events) => {
        for (const { message } of events) await saga.paymentFailed(deps, em, message.orderId, message.reason);
      },
      ...settings,
    } satisfies ConsumerSpec<typeof PaymentFailedSchema>,
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
