// Coalesced announcements: an event about an entity (a battle's live score, a campaign's
// counters) right after it changes, but at most one per entity every `intervalMs`, whichever
// replica changed it. The right to announce is claimed in the database inside the changing
// transaction (`announce` returns the entities it could not announce yet, with when it may);
// for those this replica keeps a timer for the rest of the interval, so the last change is
// announced promptly.
//
// A timer lives only as long as its process and its transaction: a replica that stops or
// crashes first, or whose timer transaction fails (a lock timeout behind a long scoring
// transaction), would leave the last change unannounced until the entity's next change, and
// a client showing the score of the middle of a burst. With `backstop`, the changing
// transaction also records what is still owed as a durable job (debounced: each change pushes
// it back), which any replica runs a little after the timer would have: it finds nothing owed
// when the timer did its work, and announces the latest state when it did not.
import { AsyncLocalStorage } from "node:async_hooks";
import type { Database, EntityManager } from "@ovation/db";
import type { Logger } from "pino";

export interface CoalescedAnnouncerOptions {
  orm: Database;
  /**
   * In the caller's transaction: announces (enqueues the events of) the entities whose interval
   * is over, and returns the others that have unannounced changes, with when they may be.
   */
  announce: (em: EntityManager, ids: readonly string[]) => Promise<Map<string, Date>>;
  /**
   * In the same transaction: makes the announcements still owed durable (a job of the service's
   * durable timers, due a little after `at`, whose handler calls `announceDue`), so that they are
   * made even when this replica's timer never fires.
   */
  backstop?: (em: EntityManager, owed: ReadonlyMap<string, Date>) => Promise<void>;
  logger: Logger;
}

export class CoalescedAnnouncer {
  readonly #options: CoalescedAnnouncerOptions;
  readonly #timers = new Map<string, NodeJS.Timeout>();
  /**
   * Timers are armed inside the changing transaction; they run in the announcer's own async
   * context, or MikroORM would resolve `em.fork()` to that finished transaction (and logs would
   * carry its trace).
   */
  readonly #inOwnContext = AsyncLocalStorage.snapshot();
  #stopped = false;

  constructor(options: CoalescedAnnouncerOptions) {
    this.#options = options;
  }

  /** Inside the transaction that changed `ids`. */
  async changed(em: EntityManager, ids: readonly string[]): Promise<void> {
    if (ids.length === 0) return;
    const later = await this.#options.announce(em, ids);
    if (later.size === 0) return;
    await this.#options.backstop?.(em, later);
    this.#inOwnContext(() => {
      for (const [id, at] of later) this.#announceAt(id, at);
    });
  }

  /** In a transaction of its own: announces whatever of `ids` is owed and due (a timer's, a job's). */
  async announceDue(ids: readonly string[]): Promise<void> {
    await this.#options.orm.em.fork().transactional((em) => this.changed(em, ids));
  }

  #announceAt(id: string, at: Date): void {
    if (this.#stopped || this.#timers.has(id)) return;
    const timer = setTimeout(
      () => {
        this.#timers.delete(id);
        this.announceDue([id]).catch((error: unknown) =>
          this.#options.logger.warn(
            { err: error, id },
            this.#options.backstop === undefined
              ? "coalesced announcement failed: the entity's next change announces it"
              : "coalesced announcement failed: its backstop job announces it",
          ),
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
