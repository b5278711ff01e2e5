// The gift service's own durable consumer of GiftSent: gift history and leaderboards, a batch
// per transaction, effectively-once through the inbox.
import type { ConsumerSpec } from "@ovation/events";
import { GiftSentSchema } from "@ovation/proto/gen/ovation/gift/v1/events_pb.ts";
import { giftSubjects } from "../app/messages.ts";
import type { GiftStore } from "../store/gift-store.ts";

export function giftLogConsumer(
  store: GiftStore,
  overrides: Partial<ConsumerSpec<typeof GiftSentSchema>> = {},
) {
  return {
    name: "gift-log",
    stream: "GIFT",
    subject: giftSubjects.sent,
    schema: GiftSentSchema,
    handle: (em, events) => store.applyGiftsSent(em, events),
    ...overrides,
  } satisfies ConsumerSpec<typeof GiftSentSchema>;
}
