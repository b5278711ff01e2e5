// The PK service's durable consumer of BoostPurchased: coins spent boosting each side of a
// battle, shown on the battle (display only: boosts never change points). Replayable:
// `./ov replay pk-side-boosts`.
import type { ConsumerSpec } from "@ovation/events";
import { Side } from "@ovation/proto/gen/ovation/pk/v1/pk_pb.ts";
import { BoostPurchasedSchema, BoostTargetType } from "@ovation/proto/gen/ovation/wallet/v1/events_pb.ts";
import type { PkStore, SideBoost } from "../store/pk-store.ts";

/** "<battle id>:A" → the side it names; undefined for anything else. */
function sideBoostOf(targetId: string, coins: bigint): SideBoost | undefined {
  const match = /^([0-9a-f-]{36}):([AB])$/i.exec(targetId);
  if (match === null) return undefined;
  return {
    battleId: match[1]!.toLowerCase(),
    side: match[2]!.toUpperCase() === "A" ? Side.A : Side.B,
    coins,
  };
}

export function sideBoostConsumer(
  store: PkStore,
  overrides: Partial<ConsumerSpec<typeof BoostPurchasedSchema>> = {},
) {
  return {
    name: "pk-side-boosts",
    stream: "WALLET",
    subject: "wallet.boost.purchased",
    schema: BoostPurchasedSchema,
    projection: { tables: ["side_boosts"] },
    handle: (em, events) =>
      store.addSideBoosts(
        em,
        events.flatMap(({ message }) => {
          if (message.targetType !== BoostTargetType.PK_SIDE) return [];
          const boost = sideBoostOf(message.targetId, message.money?.amount ?? 0n);
          return boost === undefined ? [] : [boost];
        }),
      ),
    ...overrides,
  } satisfies ConsumerSpec<typeof BoostPurchasedSchema>;
}
