// What the shop, the saga, the inventory module and the payment module need from the outside
// world, declared here so that the use cases depend on these interfaces: store/ implements the
// repositories, clients/ the wallet and the card processor, and main.ts wires the concrete
// classes. The dependency points inward: the adapters import these types, never the other way.
// Every repository method takes the caller's unit of work (`em`), so a transition and its
// outbox events commit together.
import type { EntityManager } from "@ovation/db";
import type { SignedPaymentResult } from "@ovation/proto/gen/ovation/card/v1/card_pb.ts";
import type { OrderStatus, PaymentMethod } from "@ovation/proto/gen/ovation/order/v1/order_pb.ts";
import type { TransferKind } from "@ovation/proto/gen/ovation/wallet/v1/wallet_pb.ts";
import type { ProductFields } from "../domain/shop.ts";

// ---- Products and carts -------------------------------------------------------------------

export interface ProductRow extends ProductFields {
  createdAt: Date;
  updatedAt: Date;
}

export interface CartLineRow {
  product: ProductRow;
  quantity: number;
}

/** Products and carts. */
export interface ShopRepository {
  /** A new unit of work; `transactional` on it runs a transaction. */
  fork(): EntityManager;
  activeProducts(em: EntityManager): Promise<ProductRow[]>;
  /** The product, row-locked when `lock`; null when there is none. */
  product(em: EntityManager, id: string, lock?: boolean): Promise<ProductRow | null>;
  /** Inserts the product; false when its id is taken. */
  insertProduct(em: EntityManager, product: ProductFields, at: Date): Promise<boolean>;
  updateProduct(em: EntityManager, product: ProductFields, at: Date): Promise<void>;
  cart(em: EntityManager, userId: string): Promise<CartLineRow[]>;
  /** The user's cart lines (product id → quantity), locked until the transaction ends. */
  lockCart(em: EntityManager, userId: string): Promise<Map<string, number>>;
  /** The user's cart lines, product id → quantity, without a lock. */
  cartLines(em: EntityManager, userId: string): Promise<Map<string, number>>;
  setLine(em: EntityManager, userId: string, productId: string, quantity: number, at: Date): Promise<void>;
  removeLine(em: EntityManager, userId: string, productId: string): Promise<void>;
}

// ---- Orders and their saga ----------------------------------------------------------------

export interface OrderLineRow {
  productId: string;
  name: string;
  quantity: number;
  unitPrice: bigint;
  /** Limited item (needs stock) or coin pack. */
  limited: boolean;
  /** Coins per unit (coin packs). */
  coins: bigint;
}

export interface OrderRow {
  id: string;
  userId: string;
  status: OrderStatus;
  paymentMethod: PaymentMethod;
  lines: OrderLineRow[];
  asset: string;
  total: bigint;
  coins: bigint;
  failureReason: string;
  /** WALLET: the hold the buyer placed on their coins when ordering. */
  holdId: string | null;
  requestHash: Buffer;
  createdAt: Date;
  updatedAt: Date;
}

/** A payment the payment module made for an order (the fact its PaymentSucceeded rests on). */
export interface PaymentRow {
  orderId: string;
  reference: string;
  /** CARD: the processor's SignedPaymentResult, as binary protobuf. */
  cardPayment: Uint8Array | null;
}

/** One step of an order's saga, in the order it happened. */
/** A status change of one order. */
export interface StatusChange {
  orderId: string;
  status: OrderStatus;
  failureReason: string;
  at: Date;
}

/** A step appended to one order's history. */
export interface StepAppend {
  orderId: string;
  step: string;
  detail: string;
  at: Date;
}

export interface StepRow {
  seq: number;
  step: string;
  detail: string;
  at: Date;
}

/** Orders, the payments made for them and their saga history. */
export interface OrderRepository {
  byKey(em: EntityManager, userId: string, key: string): Promise<OrderRow | null>;
  /** The order, row-locked when `lock`; null when there is none. */
  order(em: EntityManager, id: string, lock?: boolean): Promise<OrderRow | null>;
  /**
   * The orders there are of these ids, by id; row-locked when `lock`, in id order (so batches
   * that lock overlapping orders never deadlock).
   */
  orders(em: EntityManager, ids: readonly string[], lock?: boolean): Promise<Map<string, OrderRow>>;
  insert(em: EntityManager, order: OrderRow & { idempotencyKey: string }): Promise<void>;
  recordPayments(em: EntityManager, payments: readonly PaymentRow[]): Promise<void>;
  payment(em: EntityManager, orderId: string): Promise<PaymentRow | null>;
  /** The payments recorded for these orders, by order id. */
  payments(em: EntityManager, orderIds: readonly string[]): Promise<Map<string, PaymentRow>>;
  /** Sets each order's status, failure reason (empty for none) and update time, in one statement. */
  setStatuses(em: EntityManager, changes: readonly StatusChange[]): Promise<void>;
  /** Appends steps to the orders' histories in one statement, each order's in the given order. */
  addSteps(em: EntityManager, steps: readonly StepAppend[]): Promise<void>;
  history(em: EntityManager, orderId: string): Promise<StepRow[]>;
  /** The user's orders, newest first, strictly before `before` when given. */
  forUser(
    em: EntityManager,
    userId: string,
    limit: number,
    before: { at: Date; id: string } | undefined,
  ): Promise<OrderRow[]>;
}

// ---- The inventory module -----------------------------------------------------------------

export interface StockRow {
  productId: string;
  available: bigint;
  reserved: bigint;
  sold: bigint;
}

/** The units of one product an order reserved. */
export interface ReservationRow {
  productId: string;
  quantity: bigint;
}

/** Where an order's reservation stands. */
export const reservationState = { reserved: 1, released: 2, committed: 3 } as const;

/** Stock on hand of limited items. */
export interface StockRepository {
  /** Units available now, per product that has stock (missing: none). */
  available(em: EntityManager, productIds: readonly string[]): Promise<Map<string, bigint>>;
  /** The product's stock row (created empty if missing), locked until the transaction ends. */
  lockStock(em: EntityManager, productId: string): Promise<StockRow>;
  /** Records an adjustment by its key; false when the key was used before. */
  recordAdjustment(
    em: EntityManager,
    adjustment: { productId: string; key: string; delta: bigint; by: string; at: Date },
  ): Promise<boolean>;
  addAvailable(em: EntityManager, productId: string, delta: bigint): Promise<StockRow>;
}

/** An order's limited lines to reserve, all or nothing. */
export interface ReservationRequest {
  orderId: string;
  lines: readonly ReservationRow[];
}

/** What reserving an order's lines came to: the reason when nothing was reserved. */
export type ReservationOutcome = { reserved: true } | { reserved: false; reason: string };

/**
 * The units each order in flight holds, and whether its reservation is open or closed. Each
 * call serves a whole consumer batch in one round trip (sql/inventory_reserve.sql,
 * sql/inventory_finish.sql), taking the orders' locks and then the stock rows' in a fixed order.
 */
export interface ReservationRepository {
  /** Reserves each order's lines, all or nothing, in turn: one outcome per order, in order. */
  reserve(em: EntityManager, orders: readonly ReservationRequest[]): Promise<ReservationOutcome[]>;
  /** Releases (back on sale) or commits (sold) each order's reservation once, and closes it. */
  finish(em: EntityManager, orderIds: readonly string[], state: ReservationEnd): Promise<void>;
}

/** How a reservation ends. */
export type ReservationEnd = typeof reservationState.released | typeof reservationState.committed;

// ---- Other services -----------------------------------------------------------------------

/**
 * The buyer's coins, held in the wallet for an order and later captured, voided or refunded.
 * Refusals a use case acts on come back as outcomes; every other refusal and any
 * infrastructure trouble is thrown (trouble as UNAVAILABLE: retry with the same key).
 */
export interface CoinHolds {
  /** Holds the coins with the buyer's own token (their consent); refused when they are short. */
  reserve(request: {
    owner: string;
    money: { asset: string; amount: bigint };
    reference: string;
    ttlSeconds: number;
    idempotencyKey: string;
    consentToken: string;
  }): Promise<{ holdId: string; reference: string } | { refused: "insufficient_funds"; message: string }>;
  /** Moves held coins on to `creditOwner`; refused when the hold is no longer pending. */
  capture(request: {
    holdId: string;
    creditOwner: string;
    amount: bigint;
    kind: TransferKind;
  }): Promise<{ captured: true } | { refused: "not_held"; message: string }>;
  /**
   * Gives an unused hold back, and says where the hold stands: "voided" (now or before),
   * "captured" or "expired" when it was settled otherwise meanwhile, "unknown" when the wallet
   * has no such hold.
   */
  void(holdId: string): Promise<"voided" | "captured" | "expired" | "unknown">;
  /** Gives a captured hold back to its owner, once per key. */
  refund(request: { holdId: string; idempotencyKey: string }): Promise<void>;
}

/** The card processor (services/card): charges with a signed result, refunds. */
export interface CardProcessor {
  /** The processor's signed result of the charge, declined or not; the caller verifies it. */
  charge(request: {
    idempotencyKey: string;
    reference: string;
    customerId: string;
    money: { asset: string; amount: bigint };
    metadata: Record<string, string>;
  }): Promise<SignedPaymentResult>;
  /** The processor's signed result of the charge asked with this key; undefined if it never saw one. */
  chargeByKey(idempotencyKey: string): Promise<SignedPaymentResult | undefined>;
  refund(request: {
    chargeId: string;
    money: { asset: string; amount: bigint };
    idempotencyKey: string;
  }): Promise<void>;
}
