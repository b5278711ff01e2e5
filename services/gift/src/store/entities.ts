// Catalog and rooms as MikroORM entities; sends, the gift log and leaderboards are written
// with set-based SQL (gift-store.ts) because they are hot or aggregated.
import { defineEntity, p } from "@mikro-orm/core";

export const GiftEntity = defineEntity({
  name: "Gift",
  tableName: "gifts",
  properties: {
    id: p.string().primary(),
    name: p.string(),
    price: p.bigint(),
    pkPoints: p.bigint(),
    vipOnly: p.boolean(),
    minVipLevel: p.integer(),
    animationKey: p.string(),
    active: p.boolean(),
    updatedAt: p.datetime(),
  },
});

export const RoomEntity = defineEntity({
  name: "Room",
  tableName: "rooms",
  properties: {
    id: p.uuid().primary(),
    hostId: p.string(),
    title: p.string(),
    status: p.smallint(),
    startedAt: p.datetime(),
    endedAt: p.datetime().nullable(),
  },
});

export const giftEntities = [GiftEntity, RoomEntity];
