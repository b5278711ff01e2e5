// Live scores: a BattleScored event right after gifts are scored, at most one per battle every
// `intervalMs` (10 a second), whichever replica scored them. The right to publish is claimed in
// the database (claimScorePublication); a replica whose gifts fell inside the interval keeps a
// timer for the rest of it, so the last score is always published. Should that replica die
// first, the next gift, the end of the battle or its result carries the score.
import type { EntityManager } from "@ovation/db";
import { enqueueEvents } from "@ovation/events";
import type { Logger } from "pino";
import type { PkStore } from "../store/pk-store.ts";
import { battleEvents } from "./messages.ts";

export const liveScoreIntervalMs = 100;

export class LiveScores {
  readonly #store: PkStore;
  readonly #log: Logger;
  readonly #timers = new Map<string, NodeJS.Timeout>();
  #stopped = false;

  constructor(store: PkStore, logger: Logger) {
    this.#store = store;
    this.#log = logger.child({ component: "live-scores" });
  }

  /** Inside the scoring transaction: publishes the scores of battles whose interval is over. */
  async scored(em: EntityManager, battleIds: readonly string[]): Promise<void> {
    if (battleIds.length === 0) return;
    const { claimed, later } = await this.#store.claimScorePublication(em, battleIds, liveScoreIntervalMs);
    const now = new Date();
    const events = [];
    for (const id of claimed) {
      const view = await this.#store.view(em, id);
      if (view !== null) events.push(battleEvents.scored(view, now));
    }
    await enqueueEvents(em, events);
    for (const [id, at] of later) this.#publishAt(id, at);
  }

  #publishAt(battleId: string, at: Date): void {
    if (this.#stopped || this.#timers.has(battleId)) return;
    const delay = Math.max(0, at.getTime() - Date.now());
    const timer = setTimeout(() => {
      this.#timers.delete(battleId);
      this.#store
        .fork()
        .transactional((em) => this.scored(em, [battleId]))
        .catch((error: unknown) => this.#log.warn({ err: error, battleId }, "live score not published"));
    }, delay);
    timer.unref();
    this.#timers.set(battleId, timer);
  }

  stop(): void {
    this.#stopped = true;
    for (const timer of this.#timers.values()) clearTimeout(timer);
    this.#timers.clear();
  }
}
