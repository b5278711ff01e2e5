// Gift records as protobuf messages for responses, and the subjects of the gift events.
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { GiftSent } from "@ovation/proto/gen/ovation/gift/v1/events_pb.ts";
import {
  type DiscoverEntry,
  DiscoverEntrySchema,
  type Gift,
  type GiftRecord,
  GiftRecordSchema,
  GiftSchema,
  type Room,
  RoomSchema,
} from "@ovation/proto/gen/ovation/gift/v1/gift_pb.ts";
import type { CatalogGift } from "../domain/rules.ts";
import type { DiscoverRow, GiftLogRow } from "./ports.ts";

/** The subjects of the gift service's own events. */
export const giftSubjects = {
  sent: "gift.gift.sent",
  catalogChanged: "gift.catalog.changed",
  roomStarted: "gift.room.started",
  roomEnded: "gift.room.ended",
} as const;

export function giftMessage(gift: CatalogGift): Gift {
  return create(GiftSchema, { ...gift, updateTime: timestampFromDate(gift.updatedAt) });
}

export function roomMessage(room: {
  id: string;
  hostId: string;
  title: string;
  status: number;
  startedAt: Date;
  endedAt?: Date | null;
}): Room {
  return create(RoomSchema, {
    id: room.id,
    hostId: room.hostId,
    title: room.title,
    status: room.status as Room["status"],
    startTime: timestampFromDate(room.startedAt),
    endTime: room.endedAt ? timestampFromDate(room.endedAt) : undefined,
  });
}

export function giftRecordFromEvent(event: GiftSent): GiftRecord {
  return create(GiftRecordSchema, {
    id: event.sendId,
    senderId: event.senderId,
    hostId: event.hostId,
    roomId: event.roomId,
    giftId: event.giftId,
    giftName: event.giftName,
    count: event.count,
    total: event.total,
    combo: event.combo,
    sendTime: event.sendTime,
  });
}

export function giftRecordFromRow(row: GiftLogRow): GiftRecord {
  return create(GiftRecordSchema, {
    id: row.id,
    senderId: row.sender_id,
    hostId: row.host_id,
    roomId: row.room_id,
    giftId: row.gift_id,
    giftName: row.gift_name,
    count: row.count,
    total: BigInt(row.total),
    combo: row.combo,
    sendTime: timestampFromDate(new Date(row.sent_at)),
  });
}

/** A ranked live room of Discover. */
export function discoverEntryMessage(row: DiscoverRow): DiscoverEntry {
  const activity = BigInt(row.activity);
  const boost = BigInt(row.boost);
  return create(DiscoverEntrySchema, {
    room: roomMessage({
      id: row.id,
      hostId: row.host_id,
      title: row.title,
      status: row.status,
      startedAt: new Date(row.started_at),
      endedAt: row.ended_at === null ? null : new Date(row.ended_at),
    }),
    score: activity + boost,
    activity,
    boost,
    boostExpireTime:
      row.boost_expires_at === null ? undefined : timestampFromDate(new Date(row.boost_expires_at)),
  });
}
