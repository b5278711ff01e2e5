// The inventory module: stock of limited items. It answers how many units are available, takes
// admin adjustments, and serves the order saga through events only (its consumers in
// events/inventory-consumers.ts), so it can become its own deployable: an order's lines are
// reserved all or nothing, released once if the order fails, marked sold once if it completes.
// Reserve, release and commit of one order run in different consumers' transactions, so each
// first takes the order's lock: a release that overtakes a reserve still in flight either waits
// for it and puts its units back, or closes the order first so the reserve takes nothing.
// Stock rows are always locked in product id order, so concurrent orders never deadlock.
import { type EntityManager, lockName, retryRaces } from "@ovation/db";
import { ShopError } from "../domain/shop.ts";
import {
  type ReservationRepository,
  reservationState,
  type StockRepository,
  type StockRow,
} from "./ports.ts";

/** Serialises one order's reserve, release and commit until the transaction ends. */
const lockOrder = (em: EntityManager, orderId: string) => lockName(em, `inventory-order:${orderId}`);

export class Inventory {
  readonly #fork: () => EntityManager;
  readonly #store: StockRepository;
  readonly #reservations: ReservationRepository;

  constructor(fork: () => EntityManager, stock: StockRepository, reservations: ReservationRepository) {
    this.#fork = fork;
    this.#store = stock;
    this.#reservations = reservations;
  }

  /** Units available now, per product that has stock (missing: none). */
  available(em: EntityManager, productIds: readonly string[]): Promise<Map<string, bigint>> {
    return this.#store.available(em, productIds);
  }

  /** Adds or removes units once per idempotency key; never below zero available. */
  async adjust(command: { productId: string; delta: bigint; key: string; by: string }): Promise<StockRow> {
    return retryRaces(() =>
      this.#fork().transactional(async (em) => {
        const stock = await this.#store.lockStock(em, command.productId);
        const fresh = await this.#store.recordAdjustment(em, { ...command, at: new Date() });
        if (!fresh) return stock;
        if (stock.available + command.delta < 0n)
          throw new ShopError(
            "stock_too_low",
            `only ${stock.available} units of ${command.productId} are available to remove`,
          );
        return this.#store.addAvailable(em, command.productId, command.delta);
      }),
    );
  }

  /**
   * Reserves every limited line of an order, or none: the reason when one is short. Reserving
   * again is a no-op; an order already closed (failed before this arrived) is never reserved.
   */
  async reserve(
    em: EntityManager,
    orderId: string,
    lines: readonly { productId: string; quantity: bigint }[],
  ): Promise<{ reserved: true } | { reserved: false; reason: string }> {
    await lockOrder(em, orderId);
    const state = await this.#reservations.orderState(em, orderId);
    if (state.closed)
      return { reserved: false, reason: "the order was closed before its stock was reserved" };
    if (state.reserved) return { reserved: true };
    const sorted = [...lines].sort((a, b) =>
      a.productId < b.productId ? -1 : a.productId > b.productId ? 1 : 0,
    );
    const stock = [];
    for (const line of sorted) stock.push(await this.#store.lockStock(em, line.productId));
    for (const [i, line] of sorted.entries()) {
      if (stock[i]!.available < line.quantity)
        return { reserved: false, reason: `only ${stock[i]!.available} of ${line.productId} left` };
    }
    for (const line of sorted) await this.#reservations.reserveLine(em, orderId, line);
    return { reserved: true };
  }

  /** The order failed: its reserved units go back on sale, once. */
  async release(em: EntityManager, orderId: string): Promise<void> {
    await this.#finish(em, orderId, "release", reservationState.released);
  }

  /** The order completed: its reserved units are sold, once. */
  async commit(em: EntityManager, orderId: string): Promise<void> {
    await this.#finish(em, orderId, "commit", reservationState.committed);
  }

  async #finish(
    em: EntityManager,
    orderId: string,
    move: "release" | "commit",
    state: number,
  ): Promise<void> {
    await lockOrder(em, orderId);
    const held = await this.#reservations.forOrder(em, orderId, reservationState.reserved);
    for (const line of held) await this.#store.lockStock(em, line.productId);
    for (const line of held) await this.#reservations.move(em, line.productId, line.quantity, move);
    await this.#reservations.setState(em, orderId, state);
    await this.#reservations.close(em, orderId, state);
  }
}
