// Fan-out of channel frames to many sockets without holding the event loop, and the room
// channel's coalescing (0033).
//
// A frame is serialized once and the same buffer is written to every subscriber, a few hundred
// sockets per turn of the event loop: between batches Node answers REST requests, /readyz and
// pings, so a channel with 10,000 viewers costs the REST path a few milliseconds at a time,
// never the whole fan-out. Frames of one channel go out in order: the next waits until the one
// before has reached every subscriber (a bounded queue per channel; past it the oldest waiting
// frame is dropped and counted).
//
// Rooms are where bursts land (a storm of gifts into one live room), so a room's messages are
// coalesced: at most one frame per room per tick (WS_ROOM_TICK_MS), carrying every message since
// the previous frame, at most WS_ROOM_BATCH_MAX of them; beyond the bound the least valuable
// gifts are left out and counted in the frame's `dropped`. The first message after a quiet tick
// goes out at once (in the next turn), so a lone alert is not delayed; only a burst waits for
// the tick. A socket therefore gets at most ticks elapsed + 1 frames per room, however many gifts
// were sent.
import { setImmediate as nextTurn } from "node:timers/promises";
import { wsFramesSent, wsMessagesDropped, wsMessagesSent } from "../metrics.ts";
import type { ChannelKindName } from "./channels.ts";

/** Sockets written per turn of the event loop; between batches the loop serves everything else. */
export const socketsPerTurn = 256;
/** Frames of one channel waiting behind the one being written; beyond it the oldest is dropped. */
const framesQueuedPerChannelMax = 64;

/** A socket that takes frames: false when it is closed or over its send buffer limit. */
export interface FrameTarget {
  /** `messages`: how many channel messages the frame carries, counted when it is dropped. */
  deliver(frame: Buffer, messages: number): boolean;
}

interface QueuedFrame {
  kind: ChannelKindName;
  frame: Buffer;
  messages: number;
  written: () => void;
}

/** Writes frames to the subscribers of a channel key, in order, in batches of sockets. */
export class FrameWriter {
  readonly #subscribers: (key: string) => ReadonlySet<FrameTarget> | undefined;
  /** Per key being written, the frames waiting behind the current one. */
  readonly #waiting = new Map<string, QueuedFrame[]>();

  constructor(subscribers: (key: string) => ReadonlySet<FrameTarget> | undefined) {
    this.#subscribers = subscribers;
  }

  /**
   * Writes `frame` to every socket subscribed to `key` once the frames of `key` before it are
   * written; resolves when it is written (or dropped). A key with fewer than `socketsPerTurn`
   * subscribers and nothing waiting is written before this returns.
   */
  write(key: string, kind: ChannelKindName, frame: Buffer, messages: number): Promise<void> {
    return new Promise((written) => {
      const item = { kind, frame, messages, written };
      const waiting = this.#waiting.get(key);
      if (waiting === undefined) {
        this.#waiting.set(key, []);
        void this.#drain(key, item);
        return;
      }
      waiting.push(item);
      if (waiting.length > framesQueuedPerChannelMax) {
        const oldest = waiting.shift()!;
        wsMessagesDropped.inc({ kind: oldest.kind }, (this.#subscribers(key)?.size ?? 0) * oldest.messages);
        oldest.written();
      }
    });
  }

  /** Frames of `key` still being written or waiting (for tests and the bench). */
  get busyChannels(): number {
    return this.#waiting.size;
  }

  async #drain(key: string, first: QueuedFrame): Promise<void> {
    let item: QueuedFrame | undefined = first;
    while (item !== undefined) {
      await this.#writeToAll(key, item);
      item.written();
      item = this.#waiting.get(key)?.shift();
    }
    this.#waiting.delete(key);
  }

  async #writeToAll(key: string, item: QueuedFrame): Promise<void> {
    const subscribers = this.#subscribers(key);
    if (subscribers === undefined) return;
    // A copy: sockets come and go while the batches yield.
    const targets = [...subscribers];
    let delivered = 0;
    for (let index = 0; index < targets.length; index++) {
      if (index > 0 && index % socketsPerTurn === 0) await nextTurn();
      if (targets[index]!.deliver(item.frame, item.messages)) delivered++;
    }
    wsFramesSent.inc({ kind: item.kind }, delivered);
    wsMessagesSent.inc({ kind: item.kind }, delivered * item.messages);
    if (targets.length > delivered)
      wsMessagesDropped.inc({ kind: item.kind }, (targets.length - delivered) * item.messages);
  }
}

export interface RoomBatchSettings {
  /** Shortest time between two frames of one room (WS_ROOM_TICK_MS). */
  roomTickMs: number;
  /** Messages one room frame carries at most (WS_ROOM_BATCH_MAX). */
  roomBatchMax: number;
}

/** One message inside a room frame: exactly the frame it would have been on its own. */
export interface RoomEntry {
  channel: string;
  type: string;
  data: Record<string, unknown>;
  ts: string;
  id: string;
}

interface RoomState {
  channel: string;
  /** Messages since the last frame, in arrival order, with what they are worth. */
  entries: { entry: RoomEntry; priority: number }[];
  /** Messages left out since the last frame because of the bound. */
  dropped: number;
  timer: NodeJS.Timeout | undefined;
}

/**
 * Coalesces each room's messages into one frame per tick. A room's state lives from its first
 * message until a tick passes without one.
 */
export class RoomBatcher {
  readonly #settings: RoomBatchSettings;
  readonly #writer: FrameWriter;
  readonly #rooms = new Map<string, RoomState>();

  constructor(settings: RoomBatchSettings, writer: FrameWriter) {
    this.#settings = settings;
    this.#writer = writer;
  }

  /**
   * Adds a message to the room's next frame. `priority` (a gift's value) decides what is left out
   * when the frame is full: the lowest first, and a newcomer no higher than everything already in
   * it. Messages without one (a battle starting, a boost) outrank every gift.
   */
  add(key: string, entry: RoomEntry, priority = Number.POSITIVE_INFINITY): void {
    let room = this.#rooms.get(key);
    if (room === undefined) {
      room = { channel: entry.channel, entries: [], dropped: 0, timer: undefined };
      this.#rooms.set(key, room);
      // Leading edge: the first message after a quiet tick goes out in the next turn.
      room.timer = setTimeout(() => void this.#flush(key), 0);
    }
    if (room.entries.length < this.#settings.roomBatchMax) {
      room.entries.push({ entry, priority });
      return;
    }
    let lowest = 0;
    for (let index = 1; index < room.entries.length; index++) {
      if (room.entries[index]!.priority < room.entries[lowest]!.priority) lowest = index;
    }
    room.dropped++;
    if (priority <= room.entries[lowest]!.priority) return;
    room.entries.splice(lowest, 1);
    room.entries.push({ entry, priority });
  }

  /** Rooms with a frame pending or a tick running. */
  get activeRooms(): number {
    return this.#rooms.size;
  }

  /** Stops every timer; pending messages are not sent (the sockets are closing). */
  close(): void {
    for (const room of this.#rooms.values()) clearTimeout(room.timer);
    this.#rooms.clear();
  }

  async #flush(key: string): Promise<void> {
    const room = this.#rooms.get(key);
    if (room === undefined) return;
    room.timer = undefined;
    if (room.entries.length === 0 && room.dropped === 0) {
      // A whole tick without a message: the next one is a leading edge again.
      this.#rooms.delete(key);
      return;
    }
    const startedMs = performance.now();
    const messages = room.entries.map(({ entry }) => entry);
    const dropped = room.dropped;
    room.entries = [];
    room.dropped = 0;
    const frame = Buffer.from(
      JSON.stringify({
        channel: room.channel,
        type: roomBatchType,
        messages,
        dropped,
        ts: new Date().toISOString(),
      }),
    );
    await this.#writer.write(key, "room", frame, messages.length + dropped);
    // Closed meanwhile: nothing more to schedule.
    if (this.#rooms.get(key) !== room) return;
    const waitMs = Math.max(0, startedMs + this.#settings.roomTickMs - performance.now());
    room.timer = setTimeout(() => void this.#flush(key), waitMs);
  }
}

/** The `type` of a room frame: {"channel","type":"batch","messages":[…],"dropped","ts"}. */
export const roomBatchType = "batch";
