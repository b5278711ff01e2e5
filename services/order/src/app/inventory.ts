// The inventory module: stock of limited items. Today it answers how many units are available
// and takes admin adjustments; reservations for orders arrive with the order saga, through
// events only, so this module can become its own deployable.

import type { Database } from "@ovation/db";
import { type EntityManager, retryRaces } from "@ovation/db";
import { ShopError, shopErrorCodes } from "../domain/shop.ts";
import { InventoryStore, type StockRow } from "../store/inventory-store.ts";

export class Inventory {
  readonly #orm: Database;
  readonly #store = new InventoryStore();

  constructor(orm: Database) {
    this.#orm = orm;
  }

  /** Units available now, per product that has stock (missing: none). */
  available(em: EntityManager, productIds: readonly string[]): Promise<Map<string, bigint>> {
    return this.#store.available(em, productIds);
  }

  /** Adds or removes units once per idempotency key; never below zero available. */
  async adjust(command: { productId: string; delta: bigint; key: string; by: string }): Promise<StockRow> {
    return retryRaces(() =>
      this.#orm.em.fork().transactional(async (em) => {
        const stock = await this.#store.lockStock(em, command.productId);
        const fresh = await this.#store.recordAdjustment(em, { ...command, at: new Date() });
        if (!fresh) return stock;
        if (stock.available + command.delta < 0n)
          throw new ShopError(
            shopErrorCodes.stockTooLow,
            `only ${stock.available} units of ${command.productId} are available to remove`,
          );
        return this.#store.addAvailable(em, command.productId, command.delta);
      }),
    );
  }
}
