// The gift service's durable consumer of BoostPurchased: the discovery projection (boosts of
// hosts and rooms; PK sides are the PK service's). Replayable: `./ov replay gift-discovery`.
import { timestampDate } from "@bufbuild/protobuf/wkt";
import type { ConsumerSpec } from "@ovation/events";
import { BoostPurchasedSchema } from "@ovation/proto/gen/ovation/wallet/v1/events_pb.ts";
import { boostSubject, discoveryConsumerName } from "../app/boosts.ts";
import { BoostTargetType } from "../domain/boosts.ts";
import { type DiscoveryStore, discoveryTables } from "../store/discovery-store.ts";

const ranked: readonly number[] = [BoostTargetType.HOST, BoostTargetType.ROOM];

export function discoveryConsumer(
  store: DiscoveryStore,
  overrides: Partial<ConsumerSpec<typeof BoostPurchasedSchema>> = {},
) {
  return {
    name: discoveryConsumerName,
    stream: "WALLET",
    subject: boostSubject,
    schema: BoostPurchasedSchema,
    projection: {
      tables: discoveryTables,
      // Timers that fired on the old tables while a replay ran.
      settle: async (em) => {
        await store.expireDueBoosts(em);
      },
    },
    handle: (em, events) =>
      store.applyBoosts(
        em,
        events
          .map((e) => e.message)
          .filter((boost) => ranked.includes(boost.targetType) && boost.expireTime !== undefined)
          .map((boost) => ({
            boostId: boost.boostId,
            targetType: boost.targetType,
            targetId: boost.targetId,
            amount: boost.money?.amount ?? 0n,
            expiresAt: timestampDate(boost.expireTime!),
          })),
      ),
    ...overrides,
  } satisfies ConsumerSpec<typeof BoostPurchasedSchema>;
}
