// Shop records as protobuf messages.

import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { eventOf, type OutboxEvent } from "@ovation/events";
import type { SignedPaymentResult } from "@ovation/proto/gen/ovation/card/v1/card_pb.ts";
import {
  InventoryFailedSchema,
  InventoryReservedSchema,
  OrderCompletedSchema,
  OrderCreatedSchema,
  OrderFailedSchema,
  OrderStatusChangedSchema,
  PaymentFailedSchema,
  PaymentRequestedSchema,
  PaymentSucceededSchema,
  RefundRequestedSchema,
} from "@ovation/proto/gen/ovation/order/v1/events_pb.ts";
import {
  type Cart,
  CartSchema,
  type Order,
  OrderSchema,
  type Product,
  ProductSchema,
} from "@ovation/proto/gen/ovation/order/v1/order_pb.ts";
import { MoneySchema } from "@ovation/proto/gen/ovation/type/v1/money_pb.ts";
import { cartTotals } from "../domain/shop.ts";
import type { CartLineRow, OrderRow, StepRow } from "./ports.ts";
import type { ProductView } from "./shop.ts";

export function productMessage({ product, available }: ProductView): Product {
  return create(ProductSchema, {
    id: product.id,
    name: product.name,
    kind: product.kind,
    priceCoins: product.priceCoins,
    priceToman: product.priceToman,
    coins: product.coins,
    available,
    active: product.active,
  });
}

export function cartMessage(lines: readonly CartLineRow[]): Cart {
  return create(CartSchema, {
    lines: lines.map((line) => ({
      product: productMessage({ product: line.product, available: 0n }),
      quantity: line.quantity,
    })),
    ...cartTotals(lines.map((line) => ({ ...line.product, quantity: line.quantity }))),
  });
}

export const orderSubjects = {
  created: "order.order.created",
  inventoryReserved: "order.inventory.reserved",
  inventoryFailed: "order.inventory.failed",
  paymentRequested: "order.payment.requested",
  paymentSucceeded: "order.payment.succeeded",
  paymentFailed: "order.payment.failed",
  refundRequested: "order.payment.refund_requested",
  completed: "order.order.completed",
  failed: "order.order.failed",
  statusChanged: "order.order.status_changed",
} as const;

export function orderMessage(order: OrderRow, history: readonly StepRow[] = []): Order {
  return create(OrderSchema, {
    id: order.id,
    userId: order.userId,
    status: order.status,
    paymentMethod: order.paymentMethod,
    lines: order.lines.map((l) => ({
      productId: l.productId,
      name: l.name,
      quantity: l.quantity,
      unitPrice: l.unitPrice,
    })),
    total: create(MoneySchema, { asset: order.asset, amount: order.total }),
    failureReason: order.failureReason,
    createTime: timestampFromDate(order.createdAt),
    updateTime: timestampFromDate(order.updatedAt),
    history: history.map((s) => ({
      seq: s.seq,
      step: s.step,
      detail: s.detail,
      time: timestampFromDate(s.at),
    })),
  });
}

const money = (order: OrderRow) => create(MoneySchema, { asset: order.asset, amount: order.total });

export const orderEvents = {
  created: (order: OrderRow): OutboxEvent =>
    eventOf(
      OrderCreatedSchema,
      create(OrderCreatedSchema, {
        orderId: order.id,
        userId: order.userId,
        lines: order.lines.map((l) => ({ productId: l.productId, quantity: l.quantity, limited: l.limited })),
      }),
      orderSubjects.created,
    ),
  paymentRequested: (order: OrderRow): OutboxEvent =>
    eventOf(
      PaymentRequestedSchema,
      create(PaymentRequestedSchema, {
        orderId: order.id,
        userId: order.userId,
        method: order.paymentMethod,
        amount: money(order),
        holdId: order.holdId ?? "",
        coins: order.coins,
      }),
      orderSubjects.paymentRequested,
    ),
  refundRequested: (order: OrderRow, reference: string): OutboxEvent =>
    eventOf(
      RefundRequestedSchema,
      create(RefundRequestedSchema, {
        orderId: order.id,
        userId: order.userId,
        method: order.paymentMethod,
        amount: money(order),
        reference,
        holdId: order.holdId ?? "",
      }),
      orderSubjects.refundRequested,
    ),
  /** With the card processor's signed result when a card paid: the wallet mints coins only against it. */
  completed: (order: OrderRow, cardPayment?: SignedPaymentResult): OutboxEvent =>
    eventOf(
      OrderCompletedSchema,
      create(OrderCompletedSchema, {
        orderId: order.id,
        userId: order.userId,
        coins: order.coins,
        cardPayment,
      }),
      orderSubjects.completed,
    ),
  failed: (order: OrderRow): OutboxEvent =>
    eventOf(
      OrderFailedSchema,
      create(OrderFailedSchema, { orderId: order.id, reason: order.failureReason }),
      orderSubjects.failed,
    ),
  statusChanged: (order: OrderRow): OutboxEvent =>
    eventOf(
      OrderStatusChangedSchema,
      create(OrderStatusChangedSchema, { order: orderMessage(order) }),
      orderSubjects.statusChanged,
    ),
  inventoryReserved: (orderId: string): OutboxEvent =>
    eventOf(
      InventoryReservedSchema,
      create(InventoryReservedSchema, { orderId }),
      orderSubjects.inventoryReserved,
    ),
  inventoryFailed: (orderId: string, reason: string): OutboxEvent =>
    eventOf(
      InventoryFailedSchema,
      create(InventoryFailedSchema, { orderId, reason }),
      orderSubjects.inventoryFailed,
    ),
  paymentSucceeded: (orderId: string, reference: string, cardPayment?: SignedPaymentResult): OutboxEvent =>
    eventOf(
      PaymentSucceededSchema,
      create(PaymentSucceededSchema, { orderId, reference, cardPayment }),
      orderSubjects.paymentSucceeded,
    ),
  paymentFailed: (orderId: string, reason: string): OutboxEvent =>
    eventOf(
      PaymentFailedSchema,
      create(PaymentFailedSchema, { orderId, reason }),
      orderSubjects.paymentFailed,
    ),
};
