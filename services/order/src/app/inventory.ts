// The inventory module: stock of limited items. It answers how many units are available, takes
// admin adjustments, and serves the order saga through events only (its consumers in
// events/inventory-consumers.ts), so it can become its own deployable: an order's lines are
// reserved all or nothing, released once if the order fails, marked sold once if it completes.
// Reserve, release and commit of one order run in different consumers' transactions, so each
// first takes the order's lock: a release that overtakes a reserve still in flight either waits
// for it and puts its units back, or closes the order first so the reserve takes nothing. A
// consumer batch is one call of a SQL function (store/sql/), which takes every order's lock and
// then every stock row's, each in id order, so concurrent batches never deadlock and the hot
// stock rows are held from that one round trip to the batch's commit (docs/decisions/0047).
import { type EntityManager, retryRaces } from "@ovation/db";
import { ShopError } from "../domain/shop.ts";
import {
  type ReservationEnd,
  type ReservationOutcome,
  type ReservationRepository,
  type ReservationRequest,
  reservationState,
  type StockRepository,
  type StockRow,
} from "./ports.ts";

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
   * Reserves every limited line of each order, or none: the reason when one is short. Reserving
   * again is a no-op; an order already closed (failed before this arrived) is never reserved.
   * One outcome per order, in order; earlier orders of the batch reserve first.
   */
  reserve(em: EntityManager, orders: readonly ReservationRequest[]): Promise<ReservationOutcome[]> {
    return orders.length === 0 ? Promise.resolve([]) : this.#reservations.reserve(em, orders);
  }

  /** The orders failed: their reserved units go back on sale, once. */
  release(em: EntityManager, orderIds: readonly string[]): Promise<void> {
    return this.#finish(em, orderIds, reservationState.released);
  }

  /** The orders completed: their reserved units are sold, once. */
  commit(em: EntityManager, orderIds: readonly string[]): Promise<void> {
    return this.#finish(em, orderIds, reservationState.committed);
  }

  async #finish(em: EntityManager, orderIds: readonly string[], state: ReservationEnd): Promise<void> {
    if (orderIds.length > 0) await this.#reservations.finish(em, orderIds, state);
  }
}
