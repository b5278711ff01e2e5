// The gift catalog, cached in process. ListGifts and SendGift read the cache; it reloads when
// any replica changes the catalog (gift.catalog.changed, through the outbox), whenever the
// subscription may have missed such an event (after a NATS reconnect or a recreated consumer)
// and, as a last safety net, on a timer.
import { type EventBus, subscribeEphemeral } from "@ovation/events";
import type { Logger } from "pino";
import type { CatalogGift } from "../domain/rules.ts";
import { type GiftStore, giftSubjects } from "../store/gift-store.ts";

const catalogRefreshMs = 60_000;

export class CatalogCache {
  readonly #store: GiftStore;
  readonly #logger: Logger;
  #gifts = new Map<string, CatalogGift>();
  #timer: NodeJS.Timeout | undefined;
  #stopListening: (() => Promise<void>) | undefined;

  constructor(store: GiftStore, logger: Logger) {
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
    await this.refresh();
    this.#timer = setInterval(
      () => void this.refresh().catch((error) => this.#logger.warn({ err: error }, "catalog refresh failed")),
      catalogRefreshMs,
    );
    // Every replica listens for itself, to change events from now on.
    const reload = () =>
      void this.refresh().catch((error) => this.#logger.warn({ err: error }, "catalog refresh failed"));
    const subscription = await subscribeEphemeral(bus, {
      stream: "GIFT",
      subject: giftSubjects.catalogChanged,
      onMessage: reload,
      onResync: reload,
      logger: this.#logger,
    });
    this.#stopListening = () => subscription.close();
  }

  async stop(): Promise<void> {
    clearInterval(this.#timer);
    await this.#stopListening?.();
  }
}
