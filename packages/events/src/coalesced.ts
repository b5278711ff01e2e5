// Coalesced announcements: an event about an entity (a battle's live score, a campaign's
// counters) right after it changes, but at most one per entity every `intervalMs`, whichever
// replica changed it. The right to announce is claimed in the database inside the changing
// transaction (`announce` returns the entities it could not announce yet, with when it may);
// for those this replica keeps a timer for the rest of the interval, so the last change is
// always announced. Should the replica die first, the entity's next change announces it.
import type { Database, EntityManager } from "@ovation/db";
import type { Logger } from "pino";

export interface CoalescedAnnouncerOptions {
  orm: Database;
  /**
   * In the caller's transaction: announces (enqueues the events of) the entities whose interval
   * is over, and returns the others that have unannounced changes, with when they may be.
   */
  announce: (em: EntityManager, ids: readonly string[]) => Promise<Map<string, Date>>;
  logger: Logger;
}

export class CoalescedAnnouncer {
  readonly #options: CoalescedAnnouncerOptions;
  readonly #timers = new Map<string, NodeJS.Timeout>();
  #stopped = false;

  constructor(options: CoalescedAnnouncerOptions) {
    this.#options = options;
  }

  /** Inside the transaction that changed `ids`. */
  async changed(em: EntityManager, ids: readonly string[]): Promise<void> {
    if (ids.length === 0) return;
    const later = await this.#options.announce(em, ids);
    for (const [id, at] of later) this.#announceAt(id, at);
  }

  #announceAt(id: string, at: Date): void {
    if (this.#stopped || this.#timers.has(id)) return;
    const timer = setTimeout(
      () => {
        this.#timers.delete(id);
        this.#options.orm.em
          .fork()
          .transactional((em) => this.changed(em, [id]))
          .catch((error: unknown) =>
            this.#options.logger.warn({ err: error, id }, "coalesced announcement failed"),
          );
      },
      Math.max(0, at.getTime() - Date.now()),
    );
    timer.unref();
    this.#timers.set(id, timer);
  }

  stop(): void {
    this.#stopped = true;
    for (const timer of this.#timers.values()) clearTimeout(timer);
    this.#timers.clear();
  }
}
