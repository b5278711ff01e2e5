// discount-credits: which redemptions the wallet has credited, from its TransferCommitted events
// of credits earned (PROMOTION transfers whose reference is "discount:<redemption id>"), for
// the admin report.
import { timestampDate } from "@bufbuild/protobuf/wkt";
import type { ConsumerSpec } from "@ovation/events";
import { TransferCommittedSchema } from "@ovation/proto/gen/ovation/wallet/v1/events_pb.ts";
import { TransferKind } from "@ovation/proto/gen/ovation/wallet/v1/wallet_pb.ts";
import type { DiscountStore } from "../store/discount-store.ts";

const referencePrefix = "discount:";

export function creditConsumer(
  store: DiscountStore,
  overrides: Partial<ConsumerSpec<typeof TransferCommittedSchema>> = {},
) {
  return {
    name: "discount-credits",
    stream: "WALLET",
    subject: "wallet.transfer.credit.earned",
    schema: TransferCommittedSchema,
    handle: async (em, events) => {
      const credits = events.flatMap(({ message }) => {
        const t = message.transfer;
        if (t?.kind !== TransferKind.PROMOTION || !t.reference.startsWith(referencePrefix)) return [];
        return [
          {
            redemptionId: t.reference.slice(referencePrefix.length),
            at: t.createTime === undefined ? new Date() : timestampDate(t.createTime),
          },
        ];
      });
      await store.markCredited(em, credits);
    },
    ...overrides,
  } satisfies ConsumerSpec<typeof TransferCommittedSchema>;
}
