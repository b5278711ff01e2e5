// Gift persistence. Catalog and room changes commit with their events (outbox); a send is
// claimed (idempotency record + combo) before the wallet is asked to take the money.
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { LockMode, UniqueConstraintViolationException } from "@mikro-orm/core";
import type { Database, EntityManager } from "@ovation/db";
import { enqueueEvents, eventOf, type ReceivedEvent } from "@ovation/events";
import {
  CatalogChangedSchema,
  type GiftSent,
  RoomEndedSchema,
  RoomStartedSchema,
} from "@ovation/proto/gen/ovation/gift/v1/events_pb.ts";
import { v7 as uuidv7 } from "uuid";
import {
  type CatalogGift,
  GiftError,
  giftErrorCodes,
  nextCombo,
  periodKeys,
  roomStatus,
} from "../domain/rules.ts";
import { GiftEntity, RoomEntity } from "./entities.ts";

export const giftSubjects = {
  sent: "gift.gift.sent",
  catalogChanged: "gift.catalog.changed",
  roomStarted: "gift.room.started",
  roomEnded: "gift.room.ended",
} as const;

export interface SendClaim {
  id: string;
  combo: number;
  createdAt: Date;
  /** The GiftSent payload, built once at the first claim. */
  event: Uint8Array;
  /** True when the key was used before with the same request. */
  existing: boolean;
}

/** Builds the GiftSent payload for a new claim. */
export type GiftSentBuilder = (claim: { id: string; combo: number; createdAt: Date }) => Uint8Array;

export interface SendRequest {
  senderId: string;
  idempotencyKey: string;
  roomId: string;
  giftId: string;
  count: number;
}

export class GiftStore {
  readonly #orm: Database;

  constructor(orm: Database) {
    this.#orm = orm;
  }

  fork(): EntityManager {
    return this.#orm.em.fork();
  }

  async catalog(): Promise<CatalogGift[]> {
    return this.fork().find(GiftEntity, {}, { orderBy: { price: "asc", id: "asc" } });
  }

  /**
   * Adds a gift. The gift id is the idempotency key: creating the same gift again returns it
   * unchanged; another definition under a taken id is refused.
   */
  async createGift(gift: Omit<CatalogGift, "active" | "updatedAt">): Promise<CatalogGift> {
    try {
      return await this.fork().transactional(async (em) => {
        const entity = em.create(GiftEntity, { ...gift, active: true, updatedAt: new Date() });
        await em.flush();
        await catalogChanged(em, gift.id);
        return entity;
      });
    } catch (error) {
      if (!(error instanceof UniqueConstraintViolationException)) throw error;
      const existing = await this.fork().findOne(GiftEntity, { id: gift.id });
      if (existing?.active && sameDefinition(existing, gift)) return existing;
      throw new GiftError(
        giftErrorCodes.giftExists,
        `gift ${gift.id} already exists with another definition`,
      );
    }
  }

  async updateGift(id: string, change: (gift: CatalogGift) => void): Promise<CatalogGift> {
    return this.fork().transactional(async (em) => {
      const gift = await em.findOne(GiftEntity, { id }, { lockMode: LockMode.PESSIMISTIC_WRITE });
      if (gift === null) throw new GiftError(giftErrorCodes.giftNotFound, `no gift ${id}`);
      change(gift);
      gift.updatedAt = new Date();
      await em.flush();
      await catalogChanged(em, id);
      return gift;
    });
  }

  async room(id: string) {
    return this.fork().findOne(RoomEntity, { id });
  }

  /** Opens a room for the host, or returns the one already live. */
  async startLive(hostId: string, title: string) {
    const live = await this.fork().findOne(RoomEntity, { hostId, status: roomStatus.live });
    if (live !== null) return live;
    try {
      return await this.fork().transactional(async (em) => {
        const room = em.create(RoomEntity, {
          id: uuidv7(),
          hostId,
          title,
          status: roomStatus.live,
          startedAt: new Date(),
          endedAt: null,
        });
        await em.flush();
        const event = create(RoomStartedSchema, {
          roomId: room.id,
          hostId,
          startTime: timestampFromDate(room.startedAt),
        });
        await enqueueEvents(em, [eventOf(RoomStartedSchema, event, giftSubjects.roomStarted)]);
        return room;
      });
    } catch (error) {
      // A concurrent StartLive of the same host won the unique index.
      if (!(error instanceof UniqueConstraintViolationException)) throw error;
      return this.fork().findOneOrFail(RoomEntity, { hostId, status: roomStatus.live });
    }
  }

  async endLive(roomId: string, callerId: string, isAdmin: boolean) {
    return this.fork().transactional(async (em) => {
      const room = await em.findOne(RoomEntity, { id: roomId }, { lockMode: LockMode.PESSIMISTIC_WRITE });
      if (room === null) throw new GiftError(giftErrorCodes.roomNotFound, `no room ${roomId}`);
      if (room.hostId !== callerId && !isAdmin)
        throw new GiftError(giftErrorCodes.notRoomHost, "not your room");
      if (room.status === roomStatus.ended) return room;
      room.status = roomStatus.ended;
      room.endedAt = new Date();
      await em.flush();
      const event = create(RoomEndedSchema, {
        roomId,
        hostId: room.hostId,
        endTime: timestampFromDate(room.endedAt),
      });
      await enqueueEvents(em, [eventOf(RoomEndedSchema, event, giftSubjects.roomEnded)]);
      return room;
    });
  }

  /**
   * Records a send before any money moves: its id (the event id), time and combo streak. A
   * retry with the same key gets the first claim back, so the wallet sees the same request
   * and replays instead of charging twice.
   */
  async claimSend(request: SendRequest, comboWindowMs: number, build: GiftSentBuilder): Promise<SendClaim> {
    return this.fork().transactional(async (em) => {
      const now = new Date();
      const inserted = await em.execute<{ id: string }[]>(
        `insert into sends (id, sender_id, idempotency_key, room_id, gift_id, count, created_at)
         values (?, ?, ?, ?, ?, ?, ?) on conflict (sender_id, idempotency_key) do nothing returning id`,
        [
          uuidv7(),
          request.senderId,
          request.idempotencyKey,
          request.roomId,
          request.giftId,
          request.count,
          now,
        ],
      );
      if (inserted.length === 0) return existingClaim(em, request);
      // The streak row must exist before it is locked: with no row, concurrent first sends
      // would each lock nothing and each start at x1. An empty streak (0, epoch) is no streak.
      const streakKey = [request.senderId, request.roomId, request.giftId];
      await em.execute(
        `insert into combos (sender_id, room_id, gift_id, streak, last_at) values (?, ?, ?, 0, 'epoch')
         on conflict do nothing`,
        streakKey,
      );
      const [previous] = await em.execute<{ streak: number; last_at: Date }[]>(
        "select streak, last_at from combos where sender_id = ? and room_id = ? and gift_id = ? for update",
        streakKey,
      );
      const combo = nextCombo(
        previous && { streak: previous.streak, lastAt: new Date(previous.last_at) },
        now,
        comboWindowMs,
      );
      await em.execute(
        "update combos set streak = ?, last_at = greatest(last_at, ?) where sender_id = ? and room_id = ? and gift_id = ?",
        [combo, now, ...streakKey],
      );
      const id = inserted[0]!.id;
      const event = build({ id, combo, createdAt: now });
      await em.execute("update sends set combo = ?, event = ? where id = ?", [combo, Buffer.from(event), id]);
      return { id, combo, createdAt: now, event, existing: false };
    });
  }

  /** Forgets a claim whose payment was refused, so the streak and the key are as before. */
  async releaseSend(request: SendRequest, claim: SendClaim): Promise<void> {
    await this.fork().transactional(async (em) => {
      await em.execute("delete from sends where id = ?", [claim.id]);
      await em.execute(
        `update combos set streak = streak - 1
         where sender_id = ? and room_id = ? and gift_id = ? and streak = ? and streak > 1`,
        [request.senderId, request.roomId, request.giftId, claim.combo],
      );
      if (claim.combo === 1) {
        await em.execute(
          "delete from combos where sender_id = ? and room_id = ? and gift_id = ? and streak = 1",
          [request.senderId, request.roomId, request.giftId],
        );
      }
    });
  }

  /** Gift log and leaderboards for a batch of new GiftSent events, inside the consumer's transaction. */
  async applyGiftsSent(em: EntityManager, events: ReceivedEvent<GiftSent>[]): Promise<void> {
    const rows = events.map(({ message: g }) => {
      const sentAt = g.sendTime
        ? new Date(Number(g.sendTime.seconds) * 1000 + g.sendTime.nanos / 1e6)
        : new Date();
      return { ...g, sentAt, periods: periodKeys(sentAt) };
    });
    await em.execute(
      `insert into gift_log (id, sender_id, host_id, room_id, gift_id, gift_name, count, total, combo, sent_at)
       select id, sender_id, host_id, room_id, gift_id, gift_name, count, total, combo, sent_at
       from jsonb_to_recordset(?::jsonb) as g(id uuid, sender_id text, host_id text, room_id uuid, gift_id text,
            gift_name text, count int, total bigint, combo int, sent_at timestamptz)
       on conflict (id) do nothing`,
      [
        JSON.stringify(
          rows.map((g) => ({
            id: g.sendId,
            sender_id: g.senderId,
            host_id: g.hostId,
            room_id: g.roomId,
            gift_id: g.giftId,
            gift_name: g.giftName,
            count: g.count,
            total: g.total.toString(),
            combo: g.combo,
            sent_at: g.sentAt.toISOString(),
          })),
        ),
      ],
    );
    await em.execute(
      `insert into room_gifters (room_id, user_id, amount)
       select room_id, user_id, sum(amount) from jsonb_to_recordset(?::jsonb) as r(room_id uuid, user_id text, amount bigint)
       group by room_id, user_id
       on conflict (room_id, user_id) do update set amount = room_gifters.amount + excluded.amount`,
      [
        JSON.stringify(
          rows.map((g) => ({ room_id: g.roomId, user_id: g.senderId, amount: g.total.toString() })),
        ),
      ],
    );
    await em.execute(
      `insert into host_totals (period, host_id, amount)
       select period, host_id, sum(amount) from jsonb_to_recordset(?::jsonb) as h(period text, host_id text, amount bigint)
       group by period, host_id
       on conflict (period, host_id) do update set amount = host_totals.amount + excluded.amount`,
      [
        JSON.stringify(
          rows.flatMap((g) =>
            [g.periods.day, g.periods.week, g.periods.all].map((period) => ({
              period,
              host_id: g.hostId,
              amount: g.total.toString(),
            })),
          ),
        ),
      ],
    );
  }

  async history(
    userId: string,
    direction: "sent" | "received",
    limit: number,
    before?: { at: Date; id: string },
  ) {
    const column = direction === "sent" ? "sender_id" : "host_id";
    return this.fork().execute<GiftLogRow[]>(
      `select id, sender_id, host_id, room_id, gift_id, gift_name, count, total::text, combo, sent_at from gift_log
       where ${column} = ? ${before ? "and (sent_at, id) < (?, ?)" : ""}
       order by sent_at desc, id desc limit ?`,
      before ? [userId, before.at, before.id, limit] : [userId, limit],
    );
  }

  async roomLeaderboard(roomId: string, limit: number) {
    return this.fork().execute<{ user_id: string; amount: string }[]>(
      "select user_id, amount::text from room_gifters where room_id = ? order by amount desc, user_id limit ?",
      [roomId, limit],
    );
  }

  async hostLeaderboard(period: string, limit: number) {
    return this.fork().execute<{ user_id: string; amount: string }[]>(
      "select host_id as user_id, amount::text from host_totals where period = ? order by amount desc, host_id limit ?",
      [period, limit],
    );
  }
}

export interface GiftLogRow {
  id: string;
  sender_id: string;
  host_id: string;
  room_id: string;
  gift_id: string;
  gift_name: string;
  count: number;
  total: string;
  combo: number;
  sent_at: Date;
}

async function existingClaim(em: EntityManager, request: SendRequest): Promise<SendClaim> {
  const [row] = await em.execute<
    {
      id: string;
      room_id: string;
      gift_id: string;
      count: number;
      combo: number;
      created_at: Date;
      event: Buffer;
    }[]
  >(
    "select id, room_id, gift_id, count, combo, created_at, event from sends where sender_id = ? and idempotency_key = ?",
    [request.senderId, request.idempotencyKey],
  );
  if (row === undefined) throw new Error("send claim vanished");
  if (row.room_id !== request.roomId || row.gift_id !== request.giftId || row.count !== request.count) {
    throw new GiftError(
      giftErrorCodes.idempotencyConflict,
      "idempotency key reused with a different request",
    );
  }
  return {
    id: row.id,
    combo: row.combo,
    createdAt: new Date(row.created_at),
    event: row.event,
    existing: true,
  };
}

async function catalogChanged(em: EntityManager, giftId: string): Promise<void> {
  await enqueueEvents(em, [
    eventOf(CatalogChangedSchema, create(CatalogChangedSchema, { giftId }), giftSubjects.catalogChanged),
  ]);
}

const definitionFields = ["name", "price", "pkPoints", "vipOnly", "minVipLevel", "animationKey"] as const;

const sameDefinition = (
  a: Omit<CatalogGift, "active" | "updatedAt">,
  b: Omit<CatalogGift, "active" | "updatedAt">,
) => definitionFields.every((field) => a[field] === b[field]);
