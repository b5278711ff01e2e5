// The order saga's orchestrator. An order is created PENDING with its OrderCreated event; the
// inventory module answers reserved or failed; on reserved the order asks for payment; the
// payment module answers succeeded or failed; the order ends COMPLETED or FAILED, and its
// OrderCompleted / OrderFailed event tells the inventory to mark the units sold or put them back.
// Each step has a deadline (a durable timer), longer than a crash and restart can delay a step
// (config.ts): a step that does not answer in time fails the order, and its late answer
// changes nothing but the history (a late payment is refunded). An unanswered payment is asked
// after before the order fails: its answer may only have been lost.
// Every transition runs under the order row's lock, checks the status it expects, appends a
// step, and enqueues its events in the same transaction: duplicates and out-of-order events
// find the order elsewhere and only leave a line in the history.
import { createHash } from "node:crypto";
import { type EntityManager, lockIdempotencyKey, retryRaces } from "@ovation/db";
import { enqueueEvents, type OutboxEvent } from "@ovation/events";
import { cancelJob, scheduleJob } from "@ovation/jobs";
import type { SignedPaymentResult } from "@ovation/proto/gen/ovation/card/v1/card_pb.ts";
import { OrderStatus, PaymentMethod, ProductKind } from "@ovation/proto/gen/ovation/order/v1/order_pb.ts";
import { v5 as uuidv5 } from "uuid";
import { ShopError, shopLimits } from "../domain/shop.ts";
import { orderEvents } from "./messages.ts";
import { cardPaymentBytes, type Payments } from "./payments.ts";
import type { OrderLineRow, OrderRepository, OrderRow, ShopRepository } from "./ports.ts";

export const orderJobs = { deadline: "order-step-deadline" } as const;

/**
 * Order ids come from the buyer and the idempotency key: requests repeated at the same moment
 * ask the wallet for the same hold (its reference names the order), and meet at one order.
 */
const orderIdNamespace = "0d7c7a52-3f0e-4b9a-a0de-6c1f3e5d9b27";
const orderIdOf = (userId: string, idempotencyKey: string) =>
  uuidv5(`${userId}\n${idempotencyKey}`, orderIdNamespace);
const deadlineKey = (orderId: string) => `order:deadline:${orderId}`;

export interface OrderDeps {
  orders: OrderRepository;
  shop: ShopRepository;
  payments: Payments;
  fork: () => EntityManager;
  /** How long each step (reservation, payment) may take before the order fails. */
  stepTimeoutMs: number;
}

export interface CreateOrderCommand {
  userId: string;
  items: { productId: string; quantity: number }[];
  method: PaymentMethod;
  idempotencyKey: string;
  /** The buyer's own bearer token: their consent to hold coins for the order. */
  consentToken: string;
}

async function scheduleDeadline(deps: OrderDeps, em: EntityManager, orderId: string, stage: string) {
  await scheduleJob(em, {
    task: orderJobs.deadline,
    payload: { orderId, stage },
    runAt: new Date(Date.now() + deps.stepTimeoutMs),
    key: deadlineKey(orderId),
  });
}

/** The lines and totals of an order for the items, or for the user's cart when there are none. */
interface Priced {
  lines: OrderLineRow[];
  total: bigint;
  coins: bigint;
}

async function priceOrder(
  deps: OrderDeps,
  em: EntityManager,
  command: CreateOrderCommand,
  cart: Map<string, number>,
): Promise<Priced> {
  const items =
    command.items.length > 0
      ? command.items
      : [...cart].map(([productId, quantity]) => ({ productId, quantity }));
  if (items.length === 0) throw new ShopError("not_in_cart", "nothing to order: the cart is empty");
  if (items.length > shopLimits.cartLinesMax)
    throw new ShopError("cart_full", `an order holds at most ${shopLimits.cartLinesMax} products`);
  const lines: OrderLineRow[] = [];
  for (const item of items) {
    const product = await deps.shop.product(em, item.productId);
    if (product === null) throw new ShopError("product_not_found", `no product ${item.productId}`);
    if (!product.active) throw new ShopError("product_inactive", `${item.productId} is not on sale`);
    const unitPrice = command.method === PaymentMethod.WALLET ? product.priceCoins : product.priceToman;
    if (unitPrice === 0n)
      throw new ShopError(
        "product_inactive",
        `${item.productId} cannot be paid ${command.method === PaymentMethod.WALLET ? "with coins" : "by card"}`,
      );
    lines.push({
      productId: product.id,
      name: product.name,
      quantity: item.quantity,
      unitPrice,
      limited: product.kind === ProductKind.ITEM,
      coins: product.coins,
    });
  }
  return {
    lines,
    total: lines.reduce((sum, l) => sum + l.unitPrice * BigInt(l.quantity), 0n),
    coins: lines.reduce((sum, l) => sum + l.coins * BigInt(l.quantity), 0n),
  };
}

/**
 * Places an order for the items, or for the user's cart when there are none. An order paid with
 * coins first holds them with the buyer's own token (outside any transaction: it is a call to
 * the wallet), so the order exists only once its payment is promised; the hold names the order
 * id, so a retry after a lost reply finds both again.
 */
export function createOrder(deps: OrderDeps, command: CreateOrderCommand): Promise<OrderRow> {
  const hash = createHash("sha256")
    .update(JSON.stringify([command.items, command.method]))
    .digest();
  // Copies of one request in flight in this process (a double tap, a client retrying before
  // its first answer) share its placement: one wallet call and one transaction, not one each
  // queued behind the key's lock. Copies on other replicas still meet at that lock.
  let inFlight = placing.get(deps);
  if (inFlight === undefined) {
    inFlight = new Map();
    placing.set(deps, inFlight);
  }
  const flightKey = `${command.userId}\0${command.idempotencyKey}`;
  const joined = inFlight.get(flightKey);
  if (joined?.hash.equals(hash)) return joined.order;
  const order = placeOrder(deps, command, hash);
  if (joined === undefined) {
    const flights = inFlight;
    flights.set(flightKey, { hash, order });
    const land = () => flights.delete(flightKey);
    order.then(land, land);
  }
  return order;
}

/** Identical CreateOrder requests being placed by this process, per deployment of the module. */
const placing = new WeakMap<OrderDeps, Map<string, { hash: Buffer; order: Promise<OrderRow> }>>();

async function placeOrder(deps: OrderDeps, command: CreateOrderCommand, hash: Buffer): Promise<OrderRow> {
  const sameRequest = (existing: OrderRow) => {
    if (!existing.requestHash.equals(hash))
      throw new ShopError("idempotency_conflict", "idempotency key reused with a different order");
    return existing;
  };
  // Coins are held before the order exists, for the total priced then; a card order is priced
  // in its own transaction, under the cart's lock.
  let held: { orderId: string; holdId: string; priced: Priced } | undefined;
  if (command.method === PaymentMethod.WALLET) {
    const earlier = await deps.orders.byKey(deps.fork(), command.userId, command.idempotencyKey);
    if (earlier !== null) return sameRequest(earlier);
    const reading = deps.fork();
    const priced = await priceOrder(
      deps,
      reading,
      command,
      await deps.shop.cartLines(reading, command.userId),
    );
    const hold = await deps.payments.reserve({
      orderId: orderIdOf(command.userId, command.idempotencyKey),
      userId: command.userId,
      amount: priced.total,
      consentToken: command.consentToken,
      idempotencyKey: `order:${command.userId}:${command.idempotencyKey}`,
    });
    held = { ...hold, priced };
  }
  // A failure from here on leaves the hold for the retry with the same key, which finds it. A
  // duplicate sent at the same moment waits here for the first to commit, and answers with it.
  return retryRaces(() =>
    deps.fork().transactional(async (em) => {
      await lockIdempotencyKey(em, `order:${command.userId}`, command.idempotencyKey);
      const existing = await deps.orders.byKey(em, command.userId, command.idempotencyKey);
      if (existing !== null) return sameRequest(existing);
      const cart = await deps.shop.lockCart(em, command.userId);
      const { lines, total, coins } = held?.priced ?? (await priceOrder(deps, em, command, cart));
      const now = new Date();
      const order: OrderRow = {
        id: held?.orderId ?? orderIdOf(command.userId, command.idempotencyKey),
        userId: command.userId,
        status: OrderStatus.PENDING,
        paymentMethod: command.method,
        lines,
        asset: command.method === PaymentMethod.WALLET ? "COIN" : "TOMAN",
        total,
        coins,
        failureReason: "",
        holdId: held?.holdId ?? null,
        requestHash: hash,
        createdAt: now,
        updatedAt: now,
      };
      await deps.orders.insert(em, { ...order, idempotencyKey: command.idempotencyKey });
      await deps.orders.addStep(
        em,
        order.id,
        "order.created",
        `${lines.length} lines, ${order.total} ${order.asset}`,
        now,
      );
      for (const line of lines)
        if (cart.has(line.productId)) await deps.shop.removeLine(em, command.userId, line.productId);
      await scheduleDeadline(deps, em, order.id, "inventory");
      await enqueueEvents(em, [orderEvents.created(order), orderEvents.statusChanged(order)]);
      return order;
    }),
  );
}

/** One saga transition, under the order's lock: `apply` returns the events it causes. */
async function transition(
  deps: OrderDeps,
  em: EntityManager,
  orderId: string,
  step: string,
  detail: string,
  apply: (order: OrderRow, now: Date) => Promise<OutboxEvent[]>,
): Promise<void> {
  const order = await deps.orders.order(em, orderId, true);
  if (order === null) return; // not an order of ours: nothing to do
  const now = new Date();
  await deps.orders.addStep(em, orderId, step, detail, now);
  await enqueueEvents(em, await apply(order, now));
}

async function fail(deps: OrderDeps, em: EntityManager, order: OrderRow, reason: string, now: Date) {
  await deps.orders.setStatus(em, order.id, OrderStatus.FAILED, now, reason);
  await cancelJob(em, deadlineKey(order.id));
  const failed = { ...order, status: OrderStatus.FAILED, failureReason: reason, updatedAt: now };
  return [orderEvents.failed(failed), orderEvents.statusChanged(failed)];
}

export const saga = {
  inventoryReserved: (deps: OrderDeps, em: EntityManager, orderId: string) =>
    transition(deps, em, orderId, "inventory.reserved", "", async (order, now) => {
      if (order.status !== OrderStatus.PENDING) return [];
      await deps.orders.setStatus(em, order.id, OrderStatus.PROCESSING, now);
      await scheduleDeadline(deps, em, order.id, "payment");
      const processing = { ...order, status: OrderStatus.PROCESSING, updatedAt: now };
      return [orderEvents.paymentRequested(processing), orderEvents.statusChanged(processing)];
    }),

  inventoryFailed: (deps: OrderDeps, em: EntityManager, orderId: string, reason: string) =>
    transition(deps, em, orderId, "inventory.failed", reason, async (order, now) =>
      order.status === OrderStatus.PENDING ? fail(deps, em, order, reason, now) : [],
    ),

  /**
   * A payment succeeded, as the payment module recorded it (and, for a card, as the processor
   * signed it): an announcement no payment stands behind is rejected, changing nothing.
   */
  paymentSucceeded: (
    deps: OrderDeps,
    em: EntityManager,
    orderId: string,
    claimed: { reference: string; cardPayment?: SignedPaymentResult | undefined },
  ) =>
    transition(deps, em, orderId, "payment.succeeded", claimed.reference, async (order, now) => {
      const cardPayment = await deps.payments.checkPayment(
        order,
        await deps.orders.payment(em, orderId),
        claimed,
      );
      const reference = claimed.reference;
      if (order.status === OrderStatus.FAILED) {
        // Paid after the order had already failed (a deadline): the money goes back.
        await deps.orders.addStep(em, order.id, "payment.refund_requested", reference, now);
        return [orderEvents.refundRequested(order, reference)];
      }
      if (order.status !== OrderStatus.PROCESSING) return [];
      await deps.orders.setStatus(em, order.id, OrderStatus.COMPLETED, now);
      await cancelJob(em, deadlineKey(order.id));
      const completed = { ...order, status: OrderStatus.COMPLETED, updatedAt: now };
      return [orderEvents.completed(completed, cardPayment), orderEvents.statusChanged(completed)];
    }),

  paymentFailed: (deps: OrderDeps, em: EntityManager, orderId: string, reason: string) =>
    transition(deps, em, orderId, "payment.failed", reason, async (order, now) =>
      order.status === OrderStatus.PROCESSING ? fail(deps, em, order, reason, now) : [],
    ),
};

/** A step's deadline: an order still waiting for it fails, and is compensated. */
export async function stepDeadline(deps: OrderDeps, orderId: string, stage: string): Promise<void> {
  if (stage === "payment") return paymentDeadline(deps, orderId);
  await retryRaces(() =>
    deps.fork().transactional(async (em) => {
      const order = await deps.orders.order(em, orderId, true);
      if (order?.status !== OrderStatus.PENDING) return;
      const now = new Date();
      const reason = `no inventory answer within ${deps.stepTimeoutMs} ms`;
      await deps.orders.addStep(em, orderId, "deadline.inventory", reason, now);
      await enqueueEvents(em, await fail(deps, em, order, reason, now));
    }),
  );
}

/**
 * The payment step's deadline. No answer is not the same as no payment (a capture whose answer
 * was lost), so the payment module asks first, outside any transaction, and the order fails
 * only when nothing was paid; a payment that did happen is recorded and announced, as the
 * payment consumer would have, and completes the order. When even asking fails, the job
 * throws and runs again later: the order waits rather than fail on a guess.
 */
async function paymentDeadline(deps: OrderDeps, orderId: string): Promise<void> {
  const waiting = await deps.orders.order(deps.fork(), orderId);
  if (waiting?.status !== OrderStatus.PROCESSING) return;
  const outcome = await deps.payments.settleUnanswered(waiting);
  await retryRaces(() =>
    deps.fork().transactional(async (em) => {
      const order = await deps.orders.order(em, orderId, true);
      if (order?.status !== OrderStatus.PROCESSING) return;
      const now = new Date();
      if (outcome.paid) {
        await deps.orders.addStep(
          em,
          orderId,
          "deadline.payment",
          `answer lost; paid: ${outcome.reference}`,
          now,
        );
        const cardPayment = cardPaymentBytes(outcome.cardPayment);
        await deps.orders.recordPayments(em, [{ orderId, reference: outcome.reference, cardPayment }]);
        await enqueueEvents(em, [
          orderEvents.paymentSucceeded(orderId, outcome.reference, outcome.cardPayment),
        ]);
        return;
      }
      const reason = `no payment answer within ${deps.stepTimeoutMs} ms`;
      await deps.orders.addStep(em, orderId, "deadline.payment", `${reason}; ${outcome.reason}`, now);
      await enqueueEvents(em, await fail(deps, em, order, reason, now));
    }),
  );
}

/** The saga's timers an order replica runs: each step's deadline. */
export function sagaTimers(deps: OrderDeps) {
  return {
    [orderJobs.deadline]: async (payload: unknown) => {
      const { orderId, stage } = payload as { orderId: string; stage: string };
      await stepDeadline(deps, orderId, stage);
    },
  };
}
