// Which hosts are live, from the gift service's room events: two durable consumers writing one
// order-independent table (host_rooms, keyed by room). A room that ends forfeits its host's
// battle (battles.ts roomEnded), in the same transaction.
import { timestampDate } from "@bufbuild/protobuf/wkt";
import type { ConsumerSpec } from "@ovation/events";
import { RoomEndedSchema, RoomStartedSchema } from "@ovation/proto/gen/ovation/gift/v1/events_pb.ts";
import { type BattleDeps, roomEnded } from "../app/battles.ts";
import type { PkStore } from "../store/pk-store.ts";

export function roomStartedConsumer(
  store: PkStore,
  overrides: Partial<ConsumerSpec<typeof RoomStartedSchema>> = {},
) {
  return {
    name: "pk-room-started",
    stream: "GIFT",
    subject: "gift.room.started",
    schema: RoomStartedSchema,
    handle: async (em, events) => {
      for (const { message } of events) {
        await store.roomStarted(em, {
          roomId: message.roomId,
          hostId: message.hostId,
          at: message.startTime === undefined ? new Date() : timestampDate(message.startTime),
        });
      }
    },
    ...overrides,
  } satisfies ConsumerSpec<typeof RoomStartedSchema>;
}

export function roomEndedConsumer(
  store: PkStore,
  deps: BattleDeps,
  overrides: Partial<ConsumerSpec<typeof RoomEndedSchema>> = {},
) {
  return {
    name: "pk-room-ended",
    stream: "GIFT",
    subject: "gift.room.ended",
    schema: RoomEndedSchema,
    handle: async (em, events) => {
      for (const { message } of events) {
        const room = {
          roomId: message.roomId,
          hostId: message.hostId,
          at: message.endTime === undefined ? new Date() : timestampDate(message.endTime),
        };
        await store.roomEnded(em, room);
        await roomEnded(deps, em, room);
      }
    },
    ...overrides,
  } satisfies ConsumerSpec<typeof RoomEndedSchema>;
}
