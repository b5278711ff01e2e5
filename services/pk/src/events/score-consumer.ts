// pk-score: the durable consumer of GiftSent that scores battles. A batch of gifts is one
// score_gifts call in the consumer's transaction, effectively once per gift through the inbox
// (and once per battle and gift through battle_gifts' key). The gift's time is send_time, the
// wallet's journal time of its debit, not when the event arrives here.
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { type CoalescedAnnouncer, type ConsumerSpec, type EventBus, enqueueEvents } from "@ovation/events";
import { GiftSentSchema } from "@ovation/proto/gen/ovation/gift/v1/events_pb.ts";
import type { Logger } from "pino";
import { battleEvents } from "../app/messages.ts";
import type { GiftToScore, PkStore } from "../store/pk-store.ts";

export const pkScoreConsumerName = "pk-score";
export const giftSentSubject = "gift.gift.sent";

export function scoreConsumer(
  store: PkStore,
  liveScores: CoalescedAnnouncer,
  logger: Logger,
  overrides: Partial<ConsumerSpec<typeof GiftSentSchema>> = {},
) {
  return {
    name: pkScoreConsumerName,
    stream: "GIFT",
    subject: giftSentSubject,
    schema: GiftSentSchema,
    handle: async (em, events) => {
      const gifts: GiftToScore[] = [];
      for (const { message } of events) {
        if (message.pkPoints <= 0n || message.sendTime === undefined) continue;
        gifts.push({
          sendId: message.sendId,
          hostId: message.hostId,
          senderId: message.senderId,
          giftId: message.giftId,
          pkPoints: message.pkPoints,
          committedAt: timestampDate(message.sendTime),
        });
      }
      const scored = await store.scoreGifts(em, gifts);
      const late = scored.filter((g) => g.late);
      for (const gift of late)
        logger.warn(
          { battleId: gift.battleId, sendId: gift.sendId, points: gift.points.toString() },
          "gift committed inside a settled battle's window arrived late: recorded, not counted",
        );
      await enqueueEvents(em, late.map(battleEvents.lateGift));
      await liveScores.changed(em, [...new Set(scored.filter((g) => g.counted).map((g) => g.battleId))]);
    },
    ...overrides,
  } satisfies ConsumerSpec<typeof GiftSentSchema>;
}

/** Gift events in the GIFT stream that pk-score has not acknowledged yet (unknown: infinitely many). */
export async function unscoredGifts(bus: EventBus): Promise<number> {
  try {
    const info = await bus.jsm.consumers.info(bus.names.stream("GIFT"), pkScoreConsumerName);
    return info.num_pending + info.num_ack_pending;
  } catch {
    return Number.POSITIVE_INFINITY;
  }
}
