// Live rooms, cached in process, so a send needs no database read to know its room: kept by
// the gift.room.started/ended events every replica hears (follow.ts). The cache only refuses
// early; claim_send checks the room again, authoritatively, in the same round trip as the claim.
import { fromBinary } from "@bufbuild/protobuf";
import type { EventBus } from "@ovation/events";
import { RoomEndedSchema, RoomStartedSchema } from "@ovation/proto/gen/ovation/gift/v1/events_pb.ts";
import type { Logger } from "pino";
import { type LiveRoom, roomStatus } from "../domain/rules.ts";
import { type Following, follow } from "./follow.ts";
import { giftSubjects } from "./messages.ts";
import type { Rooms } from "./ports.ts";

const roomsReloadMs = 60_000;

export class RoomCache {
  readonly #store: Pick<Rooms, "liveRooms">;
  readonly #logger: Logger;
  #rooms = new Map<string, LiveRoom>();
  #following: Following | undefined;

  constructor(store: Pick<Rooms, "liveRooms">, logger: Logger) {
    this.#store = store;
    this.#logger = logger;
  }

  /** The room as last heard of; undefined when this replica has not heard of it (yet). */
  get(id: string): LiveRoom | undefined {
    return this.#rooms.get(id);
  }

  /** Records a room this replica just started or ended, ahead of its own event. */
  note(room: LiveRoom): void {
    this.#rooms.set(room.id, room);
  }

  async reload(): Promise<void> {
    const live = await this.#store.liveRooms();
    this.#rooms = new Map(live.map((room) => [room.id, { ...room, status: roomStatus.live }]));
  }

  async start(bus: EventBus): Promise<void> {
    this.#following = await follow(bus, {
      subject: "gift.room.*",
      onEvent: (subject, message) => {
        if (subject === giftSubjects.roomStarted) {
          const started = fromBinary(RoomStartedSchema, message.data);
          this.note({ id: started.roomId, hostId: started.hostId, status: roomStatus.live });
        } else if (subject === giftSubjects.roomEnded) {
          const ended = fromBinary(RoomEndedSchema, message.data);
          this.note({ id: ended.roomId, hostId: ended.hostId, status: roomStatus.ended });
        }
      },
      reload: () => this.reload(),
      reloadEveryMs: roomsReloadMs,
      logger: this.#logger,
    });
  }

  async stop(): Promise<void> {
    await this.#following?.stop();
  }
}
