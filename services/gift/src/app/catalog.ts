// The gift catalog, cached in process. ListGifts and SendGift read the cache; it reloads when
// any replica changes the catalog (gift.catalog.changed, through the outbox), whenever events
// may have been missed and on a timer (follow.ts).
import type { EventBus } from "@ovation/events";
import type { Logger } from "pino";
import type { CatalogGift } from "../domain/rules.ts";
import { type Following, follow } from "./follow.ts";
import { giftSubjects } from "./messages.ts";
import type { GiftCatalog } from "./ports.ts";

const catalogRefreshMs = 60_000;

export class CatalogCache {
  readonly #store: GiftCatalog;
  readonly #logger: Logger;
  #gifts = new Map<string, CatalogGift>();
  #following: Following | undefined;

  constructor(store: GiftCatalog, logger: Logger) {
    this.#store = store;
    this.#logger = logger;
  }

  get(id: string): CatalogGift | undefined {
    return this.#gifts.get(id);
  }

  /** Active gifts, cheapest first. */
  active(): CatalogGift[] {
    return [...this.#gifts.values()].filter((gift) => gift.active);
  }

  async refresh(): Promise<void> {
    const gifts = await this.#store.catalog();
    this.#gifts = new Map(gifts.map((gift) => [gift.id, gift]));
  }

  async start(bus: EventBus): Promise<void> {
    this.#following = await follow(bus, {
      subject: giftSubjects.catalogChanged,
      onEvent: () =>
        void this.refresh().catch((error) => this.#logger.warn({ err: error }, "catalog refresh failed")),
      reload: () => this.refresh(),
      reloadEveryMs: catalogRefreshMs,
      logger: this.#logger,
    });
  }

  async stop(): Promise<void> {
    await this.#following?.stop();
  }
}
