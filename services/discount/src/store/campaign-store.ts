// The discount store and the announcer of changed campaigns, which need each other: claims
// announce through the announcer, inside their transaction, and the announcer reads the campaigns
// it announces through the store. Counters go out at most every announceIntervalMs per campaign.
import type { Database, EntityManager } from "@ovation/db";
import { CoalescedAnnouncer, enqueueEvents } from "@ovation/events";
import type { Logger } from "pino";
import { campaignChangedEvent, redemptionEvent } from "../app/messages.ts";
import { DiscountStore } from "./discount-store.ts";

/** Campaign counters are announced at most this often per campaign (10 a second). */
export const announceIntervalMs = 100;

export function campaignStore(orm: Database, batch: { batchMax: number; queueMax: number }, logger: Logger) {
  const announcer: CoalescedAnnouncer = new CoalescedAnnouncer({
    orm,
    logger: logger.child({ component: "campaign-announcer" }),
    async announce(em, ids) {
      const { claimed, later } = await store.claimAnnouncement(em, ids, announceIntervalMs);
      await enqueueEvents(em, claimed.map(campaignChangedEvent));
      return later;
    },
  });
  const announce = (em: EntityManager, ids: string[]) => announcer.changed(em, ids);
  const store = new DiscountStore(orm, batch, {
    eventsOf: (redeemed) => redeemed.map(redemptionEvent),
    afterClaims: announce,
  });
  return { store, announce, announcer: { name: "campaign announcer", stop: async () => announcer.stop() } };
}
