// Live scores: a BattleScored event right after gifts are scored, at most one per battle every
// `intervalMs` (100 ms: 10 a second), whichever replica scored them (CoalescedAnnouncer: the
// right to publish is claimed on the battle row, and a replica whose gifts fell inside the
// interval publishes the rest when it is over). The last update of a burst always carries the
// latest score: what a replica still owes is also a debounced durable job (the backstop), so a
// replica that stops or crashes before its timer fires, or whose timer transaction fails,
// leaves it to any other. Each event carries the time of its claim (scoredTime), which
// increases per battle, so a consumer can drop one that arrives after a newer one.
import type { Database } from "@ovation/db";
import { CoalescedAnnouncer, enqueueEvents } from "@ovation/events";
import { scheduleJobs } from "@ovation/jobs";
import type { Logger } from "pino";
import { battleEvents } from "./messages.ts";
import type { BattleRepository } from "./ports.ts";

/** The durable timer that announces the scores a replica's own timer did not. */
export const liveScoreJob = "pk-live-scores";
const liveScoreJobKey = (battleId: string) => `pk:scores:${battleId}`;
/**
 * How long after a replica's own timer the backstop job is due: that timer normally announces
 * first and the job finds nothing owed; a burst keeps pushing the job back, so it runs about
 * once per burst and battle.
 */
export const liveScoreBackstopMs = 1_000;

export function liveScores(
  orm: Database,
  store: Pick<BattleRepository, "claimScorePublication" | "view">,
  intervalMs: number,
  logger: Logger,
): CoalescedAnnouncer {
  return new CoalescedAnnouncer({
    orm,
    logger: logger.child({ component: "live-scores" }),
    async announce(em, battleIds) {
      const { claimed, later } = await store.claimScorePublication(em, battleIds, intervalMs);
      const events = [];
      for (const [id, claimedAt] of claimed) {
        const view = await store.view(em, id);
        if (view !== null) events.push(battleEvents.scored(view, claimedAt));
      }
      await enqueueEvents(em, events);
      return later;
    },
    async backstop(em, owed) {
      await scheduleJobs(
        em,
        [...owed].map(([battleId, at]) => ({
          task: liveScoreJob,
          payload: { battleId },
          runAt: new Date(at.getTime() + liveScoreBackstopMs),
          key: liveScoreJobKey(battleId),
        })),
      );
    },
  });
}

/** The backstop job's handler: announces the battle's scores if they are still owed. */
export function liveScoreTasks(announcer: CoalescedAnnouncer) {
  return {
    [liveScoreJob]: async (payload: unknown) => {
      const battleId = (payload as { battleId?: unknown } | null)?.battleId;
      if (typeof battleId !== "string")
        throw new Error(`live score job without a battleId: ${JSON.stringify(payload)}`);
      await announcer.announceDue([battleId]);
    },
  };
}
