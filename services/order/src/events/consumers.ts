// The order service's durable consumers, one per subject, grouped by module: the inventory
// module (reserve, release, commit), the orchestrator (inventory and payment answers) and the
// payment module (pay, release, refund). Each is effectively once through its inbox, and each
// handler is a transition that checks the state it expects. No transaction is open while the
// payment module calls the wallet or the card processor (ConsumerSpec.prepare).
import type { DescMessage, MessageShape } from "@bufbuild/protobuf";
import type { ConsumerSpec } from "@ovation/events";
import { enqueueEvents, RejectedEventError } from "@ovation/events";
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
import { OrderStatus } from "@ovation/proto/gen/ovation/order/v1/order_pb.ts";
import type { Inventory } from "../app/inventory.ts";
import { orderEvents, orderSubjects } from "../app/messages.ts";
import { applySagaEvents, type OrderDeps, type SagaEvent } from "../app/orders.ts";
import { cardPaymentBytes, type PaymentOutcome, type Payments } from "../app/payments.ts";

type Settings = Partial<Pick<ConsumerSpec<DescMessage>, "retryBackoffMs" | "ackWaitMs" | "batchMax">>;

export function inventoryConsumers(inventory: Inventory, settings: Settings) {
  return [
    {
      name: "inventory-reserve",
      stream: "ORDER",
      subject: orderSubjects.created,
      schema: OrderCreatedSchema,
      handle: async (em, events) => {
        const orders = events.map(({ message }) => ({
          orderId: message.orderId,
          lines: message.lines
            .filter((l) => l.limited)
            .map((l) => ({ productId: l.productId, quantity: BigInt(l.quantity) })),
        }));
        const outcomes = await inventory.reserve(em, orders);
        await enqueueEvents(
          em,
          orders.map(({ orderId }, i) => {
            const outcome = outcomes[i]!;
            return outcome.reserved
              ? orderEvents.inventoryReserved(orderId)
              : orderEvents.inventoryFailed(orderId, outcome.reason);
          }),
        );
      },
      ...settings,
    } satisfies ConsumerSpec<typeof OrderCreatedSchema>,
    {
      name: "inventory-release",
      stream: "ORDER",
      subject: orderSubjects.failed,
      schema: OrderFailedSchema,
      handle: (em, events) =>
        inventory.release(
          em,
          events.map(({ message }) => message.orderId),
        ),
      ...settings,
    } satisfies ConsumerSpec<typeof OrderFailedSchema>,
    {
      name: "inventory-commit",
      stream: "ORDER",
      subject: orderSubjects.completed,
      schema: OrderCompletedSchema,
      handle: (em, events) =>
        inventory.commit(
          em,
          events.map(({ message }) => message.orderId),
        ),
      ...settings,
    } satisfies ConsumerSpec<typeof OrderCompletedSchema>,
  ];
}

export function sagaConsumers(deps: OrderDeps, settings: Settings) {
  /** A consumer of one orchestrator subject: its batch's events applied together. */
  const orchestrator = <Desc extends DescMessage>(
    name: string,
    subject: string,
    schema: Desc,
    event: (message: MessageShape<Desc>) => SagaEvent,
  ): ConsumerSpec<Desc> => ({
    name,
    stream: "ORDER",
    subject,
    schema,
    handle: (em, events) =>
      applySagaEvents(
        deps,
        em,
        events.map(({ message }) => event(message)),
      ),
    ...settings,
  });
  return [
    orchestrator(
      "order-inventory-reserved",
      orderSubjects.inventoryReserved,
      InventoryReservedSchema,
      (m) => ({
        kind: "inventory.reserved",
        orderId: m.orderId,
      }),
    ),
    orchestrator("order-inventory-failed", orderSubjects.inventoryFailed, InventoryFailedSchema, (m) => ({
      kind: "inventory.failed",
      orderId: m.orderId,
      reason: m.reason,
    })),
    orchestrator("order-payment-succeeded", orderSubjects.paymentSucceeded, PaymentSucceededSchema, (m) => ({
      kind: "payment.succeeded",
      orderId: m.orderId,
      reference: m.reference,
      cardPayment: m.cardPayment,
    })),
    orchestrator("order-payment-failed", orderSubjects.paymentFailed, PaymentFailedSchema, (m) => ({
      kind: "payment.failed",
      orderId: m.orderId,
      reason: m.reason,
    })),
  ];
}

/**
 * The payment module's consumers. Each calls the wallet or the card processor in its `prepare`
 * step, outside the transaction, with keys derived from the order, and records the answers in
 * its transaction.
 */
export function paymentConsumers(payments: Payments, deps: OrderDeps, settings: Settings) {
  /** The order as it stands, read outside any transaction. */
  const orderOf = (orderId: string) => deps.orders.order(deps.fork(), orderId);
  /** A batch's orders as they stand, read outside any transaction in one statement. */
  const ordersOf = (orderIds: readonly string[]) => deps.orders.orders(deps.fork(), orderIds);
  return [
    {
      name: "payment-pay",
      stream: "ORDER",
      subject: orderSubjects.paymentRequested,
      schema: PaymentRequestedSchema,
      // A batch's payments run side by side, so a card's latency is paid once per batch; a batch
      // that fails part-way is paid again by key, which changes nothing that was paid. An order
      // that stopped waiting (its deadline failed it) is not paid at all.
      prepare: async (events) => {
        const orders = await ordersOf(events.map(({ message }) => message.orderId));
        return Promise.all(
          events.map(async ({ message }): Promise<PaymentOutcome> => {
            const order = orders.get(message.orderId);
            if (order?.status !== OrderStatus.PROCESSING)
              return { paid: false, reason: "the order no longer waits for its payment" };
            return payments.pay({
              orderId: message.orderId,
              userId: message.userId,
              method: message.method,
              asset: message.amount?.asset ?? "",
              amount: message.amount?.amount ?? 0n,
              holdId: message.holdId,
              coins: message.coins,
            });
          }),
        );
      },
      // Each payment made is recorded with its announcement: the fact the saga checks
      // PaymentSucceeded against.
      handle: async (em, events, outcomes) => {
        await deps.orders.recordPayments(
          em,
          outcomes.flatMap((outcome, i) =>
            outcome.paid
              ? [
                  {
                    orderId: events[i]!.message.orderId,
                    reference: outcome.reference,
                    cardPayment: cardPaymentBytes(outcome.cardPayment),
                  },
                ]
              : [],
          ),
        );
        await enqueueEvents(
          em,
          outcomes.map((outcome, i) => {
            const orderId = events[i]!.message.orderId;
            return outcome.paid
              ? orderEvents.paymentSucceeded(orderId, outcome.reference, outcome.cardPayment)
              : orderEvents.paymentFailed(orderId, outcome.reason);
          }),
        );
      },
      ...settings,
    } satisfies ConsumerSpec<typeof PaymentRequestedSchema, PaymentOutcome>,
    // A failed order's payment goes back at once: its hold voided, or what was captured or
    // charged meanwhile refunded.
    {
      name: "payment-release",
      stream: "ORDER",
      subject: orderSubjects.failed,
      schema: OrderFailedSchema,
      prepare: async (events) => {
        const orders = await ordersOf(events.map(({ message }) => message.orderId));
        return Promise.all(
          events.map(async ({ message }) => {
            const order = orders.get(message.orderId);
            if (order !== undefined) await payments.release(order);
          }),
        );
      },
      handle: async () => {},
      ...settings,
    } satisfies ConsumerSpec<typeof OrderFailedSchema, void>,
    // Refunds only what was paid for a failed order: a request no payment stands behind is rejected.
    {
      name: "payment-refund",
      stream: "ORDER",
      subject: orderSubjects.refundRequested,
      schema: RefundRequestedSchema,
      prepare: (events) =>
        Promise.all(
          events.map(async ({ message }) => {
            const order = await orderOf(message.orderId);
            if (order === null)
              throw new RejectedEventError(`refund requested for an unknown order ${message.orderId}`);
            if (order.status !== OrderStatus.FAILED)
              throw new RejectedEventError(`refund requested for order ${order.id}, which has not failed`);
            await payments.checkPayment(order, await deps.orders.payment(deps.fork(), order.id), {
              reference: message.reference,
            });
            await payments.refund(order, message.reference);
          }),
        ),
      handle: async () => {},
      ...settings,
    } satisfies ConsumerSpec<typeof RefundRequestedSchema, void>,
  ];
}

/** Every durable consumer of the order service: the inventory module, the saga, the payments. */
export function orderConsumers(inventory: Inventory, deps: OrderDeps, settings: Settings) {
  return [
    ...inventoryConsumers(inventory, settings),
    ...sagaConsumers(deps, settings),
    ...paymentConsumers(deps.payments, deps, settings),
  ] as unknown as ConsumerSpec<DescMessage>[];
}
