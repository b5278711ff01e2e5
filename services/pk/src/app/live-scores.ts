// Live scores: a BattleScored event right after gifts are scored, at most one per battle every
// 100 ms (10 a second), whichever replica scored them (CoalescedAnnouncer: the right to publish
// is claimed on the battle row, and a replica whose gifts fell inside the interval publishes the
// rest when it is over). The end of the battle and its result carry the final score anyway.
import type { Database } from "@ovation/db";
import { CoalescedAnnouncer, enqueueEvents } from "@ovation/events";
import type { Logger } from "pino";
import { battleEvents } from "./messages.ts";
import type { BattleRepository } from "./ports.ts";

export const liveScoreIntervalMs = 100;

export function liveScores(
  orm: Database,
  store: Pick<BattleRepository, "claimScorePublication" | "view">,
  logger: Logger,
): CoalescedAnnouncer {
  return new CoalescedAnnouncer({
    orm,
    logger: logger.child({ component: "live-scores" }),
    async announce(em, battleIds) {
      const { claimed, later } = await store.claimScorePublication(em, battleIds, liveScoreIntervalMs);
      const now = new Date();
      const events = [];
      for (const id of claimed) {
        const view = await store.view(em, id);
        if (view !== null) events.push(battleEvents.scored(view, now));
      }
      await enqueueEvents(em, events);
      return later;
    },
  });
}
