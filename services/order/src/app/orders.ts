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
// find the order elsewhere and only leave a line in the history. A consumer batch's
// transitions share one transaction and write together (Transitions, docs/decisions/0047).
import { createHash } from "node:crypto";
import { type EntityManager, lockIdempotencyKey, retryRaces } from "@ovation/db";
import { enqueueEvents, type OutboxEvent } from "@ovation/events";
import { cancelJobs, type JobSpec, scheduleJob, scheduleJobs } from "@ovation/jobs";
import type { SignedPaymentResult } from "@ovation/proto/gen/ovation/card/v1/card_pb.ts";
import { OrderStatus, PaymentMethod, ProductKind } from "@ovation/proto/gen/ovation/order/v1/order_pb.ts";
import { v5 as uuidv5 } from "uuid";
import { ShopError, shopLimits } from "../domain/shop.ts";
import { orderEvents } from "./messages.ts";
import { cardPaymentBytes, type Payments } from "./payments.ts";
import type {
  OrderLineRow,
  OrderRepository,
  OrderRow,
  ShopRepository,
  StatusChange,
  StepAppend,
} from "./ports.ts";

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

/** The timer that fails the order when its `stage` has not answered within the step timeout. */
function deadlineJob(deps: OrderDeps, orderId: string, stage: string): JobSpec {
  return {
    task: orderJobs.deadline,
    payload: { orderId, stage },
    runAt: new Date(Date.now() + deps.stepTimeoutMs),
    key: deadlineKey(orderId),
  };
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
      await deps.orders.addSteps(em, [
        {
          orderId: order.id,
          step: "order.created",
          detail: `${lines.length} lines, ${order.total} ${order.asset}`,
          at: now,
        },
      ]);
      for (const line of lines)
        if (cart.has(line.productId)) await deps.shop.removeLine(em, command.userId, line.productId);
      await scheduleJob(em, deadlineJob(deps, order.id, "inventory"));
      await enqueueEvents(em, [orderEvents.created(order), orderEvents.statusChanged(order)]);
      return order;
    }),
  );
}

/**
 * The saga transitions of one consumer batch (or one deadline), written together: the batch's
 * orders are locked in one statement (in id order, so batches never deadlock), each transition
 * reads and changes its order in memory (a second event of the same order sees the first's
 * change), and the steps, statuses, timers and events are written at the end, one statement of
 * each kind, in the same transaction. About five round trips a batch, not five an event.
 */
class Transitions {
  readonly now = new Date();
  readonly #deps: OrderDeps;
  readonly #em: EntityManager;
  readonly #orders: Map<string, OrderRow>;
  readonly #steps: StepAppend[] = [];
  readonly #statuses = new Map<string, StatusChange>();
  readonly #deadlines = new Map<string, JobSpec>();
  readonly #cancelled = new Set<string>();
  readonly #events: OutboxEvent[] = [];

  private constructor(deps: OrderDeps, em: EntityManager, orders: Map<string, OrderRow>) {
    this.#deps = deps;
    this.#em = em;
    this.#orders = orders;
  }

  static async lock(deps: OrderDeps, em: EntityManager, orderIds: readonly string[]): Promise<Transitions> {
    return new Transitions(deps, em, await deps.orders.orders(em, [...new Set(orderIds)], true));
  }

  /** The order as this batch left it; undefined when it is not an order of ours. */
  order(orderId: string): OrderRow | undefined {
    return this.#orders.get(orderId);
  }

  step(orderId: string, step: string, detail: string): void {
    this.#steps.push({ orderId, step, detail, at: this.now });
  }

  setStatus(order: OrderRow, status: OrderStatus, failureReason = ""): OrderRow {
    const changed = { ...order, status, failureReason, updatedAt: this.now };
    this.#orders.set(order.id, changed);
    this.#statuses.set(order.id, { orderId: order.id, status, failureReason, at: this.now });
    return changed;
  }

  /** The order's next step must answer within the step timeout (replaces its deadline). */
  scheduleDeadline(orderId: string, stage: string): void {
    this.#cancelled.delete(deadlineKey(orderId));
    this.#deadlines.set(deadlineKey(orderId), deadlineJob(this.#deps, orderId, stage));
  }

  cancelDeadline(orderId: string): void {
    this.#deadlines.delete(deadlineKey(orderId));
    this.#cancelled.add(deadlineKey(orderId));
  }

  emit(events: readonly OutboxEvent[]): void {
    this.#events.push(...events);
  }

  fail(order: OrderRow, reason: string): void {
    const failed = this.setStatus(order, OrderStatus.FAILED, reason);
    this.cancelDeadline(order.id);
    this.emit([orderEvents.failed(failed), orderEvents.statusChanged(failed)]);
  }

  async write(): Promise<void> {
    const em = this.#em;
    await this.#deps.orders.addSteps(em, this.#steps);
    await this.#deps.orders.setStatuses(em, [...this.#statuses.values()]);
    await cancelJobs(em, [...this.#cancelled]);
    await scheduleJobs(em, [...this.#deadlines.values()]);
    await enqueueEvents(em, this.#events);
  }
}

/** An event of the saga's orchestrator, for the order it names. */
export type SagaEvent =
  | { kind: "inventory.reserved"; orderId: string }
  | { kind: "inventory.failed"; orderId: string; reason: string }
  | {
      kind: "payment.succeeded";
      orderId: string;
      reference: string;
      cardPayment?: SignedPaymentResult | undefined;
    }
  | { kind: "payment.failed"; orderId: string; reason: string };

/**
 * Applies a consumer batch of the orchestrator's events in turn, in the caller's transaction.
 * Each appends a step to its order's history and checks the status it expects: duplicates and
 * out-of-order events only leave a line in the history. An event of an order that is not ours
 * changes nothing.
 */
export async function applySagaEvents(
  deps: OrderDeps,
  em: EntityManager,
  events: readonly SagaEvent[],
): Promise<void> {
  const batch = await Transitions.lock(
    deps,
    em,
    events.map((event) => event.orderId),
  );
  const paid = events.filter((event) => event.kind === "payment.succeeded").map((event) => event.orderId);
  const payments = await deps.orders.payments(em, paid);
  for (const event of events) {
    const order = batch.order(event.orderId);
    if (order === undefined) continue;
    switch (event.kind) {
      case "inventory.reserved":
        batch.step(order.id, event.kind, "");
        if (order.status !== OrderStatus.PENDING) break;
        {
          const processing = batch.setStatus(order, OrderStatus.PROCESSING);
          batch.scheduleDeadline(order.id, "payment");
          batch.emit([orderEvents.paymentRequested(processing), orderEvents.statusChanged(processing)]);
        }
        break;
      case "inventory.failed":
        batch.step(order.id, event.kind, event.reason);
        if (order.status === OrderStatus.PENDING) batch.fail(order, event.reason);
        break;
      case "payment.succeeded": {
        // A payment succeeded, as the payment module recorded it (and, for a card, as the
        // processor signed it): an announcement no payment stands behind is rejected, changing
        // nothing (the whole batch: its consumer retries the others alone).
        batch.step(order.id, event.kind, event.reference);
        const cardPayment = await deps.payments.checkPayment(order, payments.get(order.id) ?? null, event);
        if (order.status === OrderStatus.FAILED) {
          // Paid after the order had already failed (a deadline): the money goes back.
          batch.step(order.id, "payment.refund_requested", event.reference);
          batch.emit([orderEvents.refundRequested(order, event.reference)]);
          break;
        }
        if (order.status !== OrderStatus.PROCESSING) break;
        const completed = batch.setStatus(order, OrderStatus.COMPLETED);
        batch.cancelDeadline(order.id);
        batch.emit([orderEvents.completed(completed, cardPayment), orderEvents.statusChanged(completed)]);
        break;
      }
      case "payment.failed":
        batch.step(order.id, event.kind, event.reason);
        if (order.status === OrderStatus.PROCESSING) batch.fail(order, event.reason);
        break;
    }
  }
  await batch.write();
}

/** A step's deadline: an order still waiting for it fails, and is compensated. */
export async function stepDeadline(deps: OrderDeps, orderId: string, stage: string): Promise<void> {
  if (stage === "payment") return paymentDeadline(deps, orderId);
  await retryRaces(() =>
    deps.fork().transactional(async (em) => {
      const batch = await Transitions.lock(deps, em, [orderId]);
      const order = batch.order(orderId);
      if (order?.status !== OrderStatus.PENDING) return;
      const reason = `no inventory answer within ${deps.stepTimeoutMs} ms`;
      batch.step(orderId, "deadline.inventory", reason);
      batch.fail(order, reason);
      await batch.write();
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
      const batch = await Transitions.lock(deps, em, [orderId]);
      const order = batch.order(orderId);
      if (order?.status !== OrderStatus.PROCESSING) return;
      if (outcome.paid) {
        batch.step(orderId, "deadline.payment", `answer lost; paid: ${outcome.reference}`);
        const cardPayment = cardPaymentBytes(outcome.cardPayment);
        await deps.orders.recordPayments(em, [{ orderId, reference: outcome.reference, cardPayment }]);
        batch.emit([orderEvents.paymentSucceeded(orderId, outcome.reference, outcome.cardPayment)]);
      } else {
        const reason = `no payment answer within ${deps.stepTimeoutMs} ms`;
        batch.step(orderId, "deadline.payment", `${reason}; ${outcome.reason}`);
        batch.fail(order, reason);
      }
      await batch.write();
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
