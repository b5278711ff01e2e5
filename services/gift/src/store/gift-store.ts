// Gift persistence. Catalog and room changes commit with their events (outbox); a send is
// claimed (idempotency record, combo, payload fields) in one call before the wallet is asked to
// take the money.
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { LockMode, UniqueConstraintViolationException } from "@mikro-orm/core";
import {
  Batcher,
  type BatcherLimits,
  type Database,
  type EntityManager,
  nativePool,
  preparedStatementName,
  retryRaces,
} from "@ovation/db";
import { enqueueEvents, eventOf, type ReceivedEvent } from "@ovation/events";
import {
  CatalogChangedSchema,
  type GiftSent,
  RoomEndedSchema,
  RoomStartedSchema,
} from "@ovation/proto/gen/ovation/gift/v1/events_pb.ts";
import type pg from "pg";
import { v7 as uuidv7 } from "uuid";
import { giftSubjects } from "../app/messages.ts";
import type {
  GiftLogRow,
  GiftRepository,
  LeaderboardRow,
  SendClaim,
  SendRequest,
  SendSnapshot,
} from "../app/ports.ts";
import { type CatalogGift, GiftError, periodKeys, roomStatus } from "../domain/rules.ts";
import { GiftEntity, RoomEntity } from "./entities.ts";

interface ClaimRow {
  outcome: "claimed" | "existing" | "conflict" | "room_not_found" | "room_not_live" | "self_gift";
  id: string;
  combo: number;
  created_at: Date | string;
  room_id: string;
  gift_id: string;
  count: number;
  host_id: string;
  gift_name: string;
  unit_price: string;
  pk_points: string;
  animation_key: string;
  sender_vip_level: number;
  event: Buffer | null;
}

/** One claim as claim_sends takes it (its SQL tests build them too). */
export interface ClaimItem {
  id: string;
  sender: string;
  key: string;
  room: string;
  gift: string;
  count: number;
  now: string;
  gift_name: string;
  unit_price: string;
  pk_points: string;
  animation_key: string;
  vip_level: number;
}

export interface GiftStoreOptions {
  /** Same sender, gift and room within this window continue a combo streak. */
  comboWindowMs: number;
  /** Group commit of claims: claims per claim_sends call, and claims waiting at most. */
  claimBatch: BatcherLimits;
}

export class GiftStore implements GiftRepository {
  readonly #orm: Database;
  readonly #comboWindowMs: number;
  readonly #claims: Batcher<ClaimItem, ClaimRow>;
  #nativePool: Promise<pg.Pool> | undefined;

  constructor(orm: Database, options: GiftStoreOptions) {
    this.#orm = orm;
    this.#comboWindowMs = options.comboWindowMs;
    this.#claims = new Batcher(options.claimBatch, (items) => retryRaces(() => this.#claimBatch(items)));
  }

  /** Claims in one transaction and one commit, each with its own outcome, in arrival order. */
  async #claimBatch(items: ClaimItem[]): Promise<ClaimRow[]> {
    const pool = await this.#pool();
    const { rows } = await pool.query<ClaimRow>({
      name: preparedStatementName(pool, "claim_sends"),
      text: "select * from claim_sends($1::jsonb, $2::int)",
      values: [JSON.stringify(items), this.#comboWindowMs],
    });
    return rows;
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
      throw new GiftError("gift_exists", `gift ${gift.id} already exists with another definition`);
    }
  }

  async updateGift(id: string, change: (gift: CatalogGift) => void): Promise<CatalogGift> {
    return this.fork().transactional(async (em) => {
      const gift = await em.findOne(GiftEntity, { id }, { lockMode: LockMode.PESSIMISTIC_WRITE });
      if (gift === null) throw new GiftError("gift_not_found", `no gift ${id}`);
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
      if (room === null) throw new GiftError("room_not_found", `no room ${roomId}`);
      if (room.hostId !== callerId && !isAdmin) throw new GiftError("not_room_host", "not your room");
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
   * Records a send before any money moves, in one round trip (claim_send, group-committed with
   * the claims that arrive meanwhile): its id (the event id), time, combo streak and what its
   * payload is built from. A retry with the same key gets
   * the first claim back, so the wallet sees the same request and replays instead of charging
   * twice. The room being live is checked here, authoritatively.
   */
  async claimSend(request: SendRequest, snapshot: SendSnapshot): Promise<SendClaim> {
    const row = await this.#claims.submit({
      id: uuidv7(),
      sender: request.senderId,
      key: request.idempotencyKey,
      room: request.roomId,
      gift: request.giftId,
      count: request.count,
      now: new Date().toISOString(),
      gift_name: snapshot.giftName,
      unit_price: snapshot.unitPrice.toString(),
      pk_points: snapshot.pkPoints.toString(),
      animation_key: snapshot.animationKey,
      vip_level: snapshot.senderVipLevel,
    });
    switch (row.outcome) {
      case "conflict":
        throw new GiftError("idempotency_conflict", "idempotency key reused with a different request");
      case "room_not_found":
        throw new GiftError("room_not_found", "no such room");
      case "room_not_live":
        throw new GiftError("room_not_live", "the room is not live");
      case "self_gift":
        throw new GiftError("self_gift", "hosts cannot send gifts to themselves");
      default:
        return claimOf(row);
    }
  }

  /**
   * The claim a key already made, if any: a send refused from cached state (gift retired, room
   * ended) may be the retry of one that was paid for, and must get its first answer.
   */
  async earlierClaim(request: SendRequest): Promise<SendClaim | undefined> {
    const [row] = await this.fork().execute<Omit<ClaimRow, "outcome">[]>(
      `select id, combo, created_at, room_id, gift_id, count, host_id, gift_name, unit_price::text,
              pk_points::text, animation_key, sender_vip_level, event
       from sends where sender_id = ? and idempotency_key = ?`,
      [request.senderId, request.idempotencyKey],
    );
    if (row === undefined) return undefined;
    if (row.room_id !== request.roomId || row.gift_id !== request.giftId || row.count !== request.count) {
      throw new GiftError("idempotency_conflict", "idempotency key reused with a different request");
    }
    return claimOf({ ...row, outcome: "existing" });
  }

  /** Rooms that are live now, for the room cache. */
  async liveRooms(): Promise<{ id: string; hostId: string }[]> {
    const rows = await this.fork().execute<{ id: string; host_id: string }[]>(
      "select id, host_id from rooms where status = ?",
      [roomStatus.live],
    );
    return rows.map((row) => ({ id: row.id, hostId: row.host_id }));
  }

  #pool(): Promise<pg.Pool> {
    this.#nativePool ??= nativePool(this.#orm);
    return this.#nativePool;
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
    return this.fork().execute<LeaderboardRow[]>(
      "select user_id, amount::text from room_gifters where room_id = ? order by amount desc, user_id limit ?",
      [roomId, limit],
    );
  }

  async hostLeaderboard(period: string, limit: number) {
    return this.fork().execute<LeaderboardRow[]>(
      "select host_id as user_id, amount::text from host_totals where period = ? order by amount desc, host_id limit ?",
      [period, limit],
    );
  }
}

function claimOf(row: ClaimRow): SendClaim {
  return {
    id: row.id,
    combo: row.combo,
    createdAt: new Date(row.created_at),
    roomId: row.room_id,
    hostId: row.host_id,
    giftId: row.gift_id,
    giftName: row.gift_name,
    unitPrice: BigInt(row.unit_price ?? 0),
    pkPoints: BigInt(row.pk_points ?? 0),
    animationKey: row.animation_key,
    count: row.count,
    senderVipLevel: row.sender_vip_level,
    event: row.event ?? undefined,
    existing: row.outcome === "existing",
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
