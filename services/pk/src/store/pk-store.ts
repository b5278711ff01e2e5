// PK persistence in plain SQL: battles change state under a row lock (`lockBattle`), gifts are
// scored set-based by score_gifts (migrations.ts). Every method takes the caller's transaction.
import { type Database, type EntityManager, violatedConstraint } from "@ovation/db";
import {
  type BattleMode,
  type BattleResult,
  BattleState,
  ParticipantStatus,
  type Side,
  type TiePolicy,
} from "@ovation/proto/gen/ovation/pk/v1/pk_pb.ts";
import type {
  BattleRepository,
  BattleRow,
  BattleView,
  BonusWindowRepository,
  BonusWindowRow,
  HostRow,
} from "../app/ports.ts";
import type { BattleSettings, HostRecordCounts } from "../domain/battle.ts";

/** A boost of one side of a battle, as the projection receives it. */
export interface SideBoost {
  battleId: string;
  side: Side;
  coins: bigint;
}

export interface GiftToScore {
  sendId: string;
  hostId: string;
  senderId: string;
  giftId: string;
  pkPoints: bigint;
  committedAt: Date;
}

export interface ScoredGift {
  battleId: string;
  sendId: string;
  side: Side;
  points: bigint;
  committedAt: Date;
  counted: boolean;
  late: boolean;
}

type Row = Record<string, unknown>;

const date = (value: unknown): Date | null => (value === null ? null : new Date(value as string));

function battleRow(row: Row): BattleRow {
  return {
    id: row.id as string,
    mode: Number(row.mode) as BattleMode,
    state: Number(row.state) as BattleState,
    createdBy: row.created_by as string,
    idempotencyKey: row.idempotency_key as string,
    requestHash: row.request_hash as Buffer,
    durationSeconds: Number(row.duration_seconds),
    tiePolicy: Number(row.tie_policy) as TiePolicy,
    bonusRoundSeconds: Number(row.bonus_round_seconds),
    bonusRoundsMax: Number(row.bonus_rounds_max),
    bonusRoundsPlayed: Number(row.bonus_rounds_played),
    createdAt: date(row.created_at)!,
    inviteExpiresAt: date(row.invite_expires_at),
    startedAt: date(row.started_at),
    endsAt: date(row.ends_at),
    endedAt: date(row.ended_at),
    settledAt: date(row.settled_at),
    result: Number(row.result) as BattleResult,
    reason: row.reason as string,
    scoreA: BigInt(row.score_a as string),
    scoreB: BigInt(row.score_b as string),
    lateA: BigInt(row.late_a as string),
    lateB: BigInt(row.late_b as string),
    forfeitSide: row.forfeit_side === null ? null : (Number(row.forfeit_side) as Side),
  };
}

function hostRow(row: Row): HostRow {
  return {
    hostId: row.host_id as string,
    side: Number(row.side) as Side,
    status: Number(row.status) as ParticipantStatus,
    roomId: (row.room_id as string | null) ?? null,
    points: BigInt(row.points as string),
    forfeitedAt: date(row.forfeited_at),
  };
}

function windowRow(row: Row): BonusWindowRow {
  return {
    id: row.id as string,
    multiplier: Number(row.multiplier),
    startsAt: date(row.starts_at)!,
    endsAt: date(row.ends_at)!,
    battleId: (row.battle_id as string | null) ?? null,
    giftId: (row.gift_id as string | null) ?? null,
    createdBy: row.created_by as string,
    requestHash: row.request_hash as Buffer,
  };
}

/** Postgres' unique violation, raised when a host is already busy in another battle. */
const busyHostConstraint = "battle_hosts_one_busy";

export class PkStore implements BattleRepository, BonusWindowRepository {
  readonly #orm: Database;

  constructor(orm: Database) {
    this.#orm = orm;
  }

  fork(): EntityManager {
    return this.#orm.em.fork();
  }

  isBusyHost(error: unknown): boolean {
    return violatedConstraint(error) === busyHostConstraint;
  }

  async battleByKey(em: EntityManager, createdBy: string, key: string): Promise<BattleRow | null> {
    const rows = await em.execute<Row[]>(
      "select * from battles where created_by = ? and idempotency_key = ?",
      [createdBy, key],
    );
    return rows[0] === undefined ? null : battleRow(rows[0]);
  }

  /** The battle, locked until the transaction ends; null when there is none. */
  /** Battles ENDED before `before` and not settled since, oldest first. */
  async endedBefore(em: EntityManager, before: Date, limit: number): Promise<string[]> {
    const rows = await em.execute<{ id: string }[]>(
      // The state is written into the text so the planner can use the partial index battles_ended.
      `select id from battles where state = ${BattleState.ENDED} and ended_at < ? order by ended_at limit ?`,
      [before, limit],
    );
    return rows.map((row) => row.id);
  }

  async lockBattle(em: EntityManager, id: string): Promise<BattleRow | null> {
    const rows = await em.execute<Row[]>("select * from battles where id = ? for update", [id]);
    return rows[0] === undefined ? null : battleRow(rows[0]);
  }

  /** The battle a host accepted that is pending, running or waiting for settlement, locked. */
  async lockBusyBattle(em: EntityManager, hostId: string): Promise<BattleRow | null> {
    const rows = await em.execute<Row[]>(
      `select b.* from battles b join battle_hosts h on h.battle_id = b.id
       where h.host_id = ? and h.busy for update of b`,
      [hostId],
    );
    return rows[0] === undefined ? null : battleRow(rows[0]);
  }

  async busyHosts(em: EntityManager, hostIds: readonly string[]): Promise<Set<string>> {
    const rows = await em.execute<Row[]>(
      `select host_id from battle_hosts
       where host_id in (select jsonb_array_elements_text(?::jsonb)) and busy`,
      [JSON.stringify(hostIds)],
    );
    return new Set(rows.map((row) => row.host_id as string));
  }

  async lockInvitations(em: EntityManager, hostId: string): Promise<BattleRow[]> {
    const rows = await em.execute<Row[]>(
      `select b.* from battles b join battle_hosts h on h.battle_id = b.id
       where h.host_id = ? and h.status = ? and b.state = ? order by b.id for update of b`,
      [hostId, ParticipantStatus.INVITED, BattleState.PENDING],
    );
    return rows.map(battleRow);
  }

  async inviteCooldowns(
    em: EntityManager,
    inviterId: string,
    inviteeIds: readonly string[],
    now: Date,
  ): Promise<Map<string, Date>> {
    const rows = await em.execute<Row[]>(
      `select invitee_id, until from invite_cooldowns
       where inviter_id = ? and invitee_id in (select jsonb_array_elements_text(?::jsonb)) and until > ?`,
      [inviterId, JSON.stringify(inviteeIds), now],
    );
    return new Map(rows.map((row) => [row.invitee_id as string, date(row.until)!]));
  }

  async startInviteCooldowns(
    em: EntityManager,
    inviterId: string,
    inviteeIds: readonly string[],
    until: Date,
    now: Date,
  ): Promise<void> {
    if (inviteeIds.length === 0) return;
    await em.execute("delete from invite_cooldowns where inviter_id = ? and until <= ?", [inviterId, now]);
    await em.execute(
      `insert into invite_cooldowns (inviter_id, invitee_id, until)
       select ?, invitee_id, ? from jsonb_array_elements_text(?::jsonb) as x(invitee_id) order by invitee_id
       on conflict (inviter_id, invitee_id) do update set until = greatest(invite_cooldowns.until, excluded.until)`,
      [inviterId, until, JSON.stringify(inviteeIds)],
    );
  }

  async insertBattle(
    em: EntityManager,
    battle: {
      id: string;
      createdBy: string;
      key: string;
      hash: Buffer;
      createdAt: Date;
      inviteExpiresAt: Date;
    },
    settings: BattleSettings,
    accepted: (hostId: string) => boolean,
  ): Promise<void> {
    await em.execute(
      `insert into battles (id, mode, state, created_by, idempotency_key, request_hash, duration_seconds,
         tie_policy, bonus_round_seconds, bonus_rounds_max, created_at, invite_expires_at)
       values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      [
        battle.id,
        settings.mode,
        BattleState.PENDING,
        battle.createdBy,
        battle.key,
        battle.hash,
        settings.durationSeconds,
        settings.tiePolicy,
        settings.bonusRoundSeconds,
        settings.bonusRoundsMax,
        battle.createdAt,
        battle.inviteExpiresAt,
      ],
    );
    // Only the hosts who are in already are busy: an invitation holds no one who has not
    // answered it, so an inviter cannot keep another host out of every other battle.
    await em.execute(
      `insert into battle_hosts (battle_id, host_id, side, status, busy)
       select ?, x.host_id, x.side, x.status, x.status = ?
       from jsonb_to_recordset(?::jsonb) as x(host_id text, side smallint, status smallint)`,
      [
        battle.id,
        ParticipantStatus.ACCEPTED,
        JSON.stringify(
          settings.sides.map(({ hostId, side }) => ({
            host_id: hostId,
            side,
            status: accepted(hostId) ? ParticipantStatus.ACCEPTED : ParticipantStatus.INVITED,
          })),
        ),
      ],
    );
  }

  async hosts(em: EntityManager, battleId: string): Promise<HostRow[]> {
    const rows = await em.execute<Row[]>(
      "select * from battle_hosts where battle_id = ? order by side, host_id",
      [battleId],
    );
    return rows.map(hostRow);
  }

  /** Accepting makes a host busy: battle_hosts_one_busy refuses it when they already are. */
  async setHostStatus(em: EntityManager, battleId: string, hostId: string, status: ParticipantStatus) {
    await em.execute(
      "update battle_hosts set status = ?, busy = busy or ? where battle_id = ? and host_id = ?",
      [status, status === ParticipantStatus.ACCEPTED, battleId, hostId],
    );
  }

  /** The live room of each host that has one (the newest, if a host somehow has two). */
  async liveRooms(em: EntityManager, hostIds: readonly string[]): Promise<Map<string, string>> {
    const rows = await em.execute<Row[]>(
      `select distinct on (host_id) host_id, room_id from host_rooms
       where host_id in (select jsonb_array_elements_text(?::jsonb)) and ended_at is null order by host_id, started_at desc`,
      [JSON.stringify(hostIds)],
    );
    return new Map(rows.map((row) => [row.host_id as string, row.room_id as string]));
  }

  async start(
    em: EntityManager,
    battleId: string,
    startedAt: Date,
    endsAt: Date,
    rooms: Map<string, string>,
  ) {
    await em.execute("update battles set state = ?, started_at = ?, ends_at = ? where id = ?", [
      BattleState.ACTIVE,
      startedAt,
      endsAt,
      battleId,
    ]);
    await em.execute(
      `update battle_hosts h set room_id = r.room_id::uuid
       from jsonb_each_text(?::jsonb) as r(host_id, room_id)
       where h.battle_id = ? and h.host_id = r.host_id`,
      [JSON.stringify(Object.fromEntries(rooms)), battleId],
    );
  }

  /** Pending → cancelled: the hosts are free again. */
  async cancel(em: EntityManager, battleId: string, reason: string) {
    await em.execute("update battles set state = ?, reason = ? where id = ?", [
      BattleState.CANCELLED,
      reason,
      battleId,
    ]);
    await em.execute("update battle_hosts set busy = false where battle_id = ?", [battleId]);
  }

  /** Time is up (or a side forfeited): gifts committed from `endsAt` on no longer count. */
  async timeUp(
    em: EntityManager,
    battleId: string,
    endsAt: Date,
    endedAt: Date,
    forfeit?: { side: Side; reason: string },
  ) {
    await em.execute(
      `update battles set state = ?, ends_at = ?, ended_at = ?, forfeit_side = coalesce(?, forfeit_side),
         reason = coalesce(?, reason) where id = ?`,
      [BattleState.ENDED, endsAt, endedAt, forfeit?.side ?? null, forfeit?.reason ?? null, battleId],
    );
  }

  /** A host ended their room: gifts to them committed from `at` on stop counting. */
  async forfeitHost(em: EntityManager, battleId: string, hostId: string, at: Date) {
    await em.execute(
      "update battle_hosts set status = ?, forfeited_at = ? where battle_id = ? and host_id = ?",
      [ParticipantStatus.FORFEITED, at, battleId, hostId],
    );
  }

  /** Extra time after a tie: the window now ends at `endsAt`, and what it holds counts. */
  async bonusRound(em: EntityManager, battleId: string, endsAt: Date) {
    await em.execute(
      `update battles set state = ?, ends_at = ?, ended_at = null, bonus_rounds_played = bonus_rounds_played + 1
       where id = ?`,
      [BattleState.BONUS_ROUND, endsAt, battleId],
    );
    await em.execute("select count_window(?)", [battleId]);
  }

  async settle(em: EntityManager, battleId: string, result: BattleResult, settledAt: Date, reason: string) {
    await em.execute(
      `update battles set state = ?, result = ?, settled_at = ?,
         reason = case when reason = '' then ? else reason || '; ' || ? end where id = ?`,
      [BattleState.SETTLED, result, settledAt, reason, reason, battleId],
    );
    await em.execute("update battle_hosts set busy = false where battle_id = ?", [battleId]);
  }

  /** Records for these hosts, locked, zero for a host with none yet. */
  async lockRecords(em: EntityManager, hostIds: readonly string[]): Promise<Map<string, HostRecordCounts>> {
    await em.execute(
      `insert into host_records (host_id) select jsonb_array_elements_text(?::jsonb) order by 1 on conflict do nothing`,
      [JSON.stringify(hostIds)],
    );
    const rows = await em.execute<Row[]>(
      `select * from host_records where host_id in (select jsonb_array_elements_text(?::jsonb))
       order by host_id for update`,
      [JSON.stringify(hostIds)],
    );
    return new Map(rows.map((row) => [row.host_id as string, recordOf(row)]));
  }

  async saveRecords(em: EntityManager, records: Map<string, HostRecordCounts>, at: Date) {
    await em.execute(
      `update host_records r set wins = x.wins, losses = x.losses, draws = x.draws, win_streak = x.win_streak,
         updated_at = ?
       from jsonb_to_recordset(?::jsonb) as x(host_id text, wins int, losses int, draws int, win_streak int)
       where r.host_id = x.host_id`,
      [
        at,
        JSON.stringify(
          [...records].map(([hostId, r]) => ({
            host_id: hostId,
            wins: r.wins,
            losses: r.losses,
            draws: r.draws,
            win_streak: r.winStreak,
          })),
        ),
      ],
    );
  }

  async record(em: EntityManager, hostId: string): Promise<HostRecordCounts> {
    const rows = await em.execute<Row[]>("select * from host_records where host_id = ?", [hostId]);
    return rows[0] === undefined ? { wins: 0, losses: 0, draws: 0, winStreak: 0 } : recordOf(rows[0]);
  }

  async view(em: EntityManager, battleId: string): Promise<BattleView | null> {
    const rows = await em.execute<Row[]>("select * from battles where id = ?", [battleId]);
    if (rows[0] === undefined) return null;
    return this.#complete(em, battleRow(rows[0]));
  }

  async #complete(em: EntityManager, battle: BattleRow): Promise<BattleView> {
    const supporters = await em.execute<Row[]>(
      `select side, user_id, points from (
         select s.*, row_number() over (partition by side order by points desc, user_id) as rank
         from battle_supporters s where battle_id = ?) ranked
       where rank <= 3 order by side, rank`,
      [battle.id],
    );
    const boosts = await em.execute<Row[]>(
      "select side, boost_coins::text, boosts from side_boosts where battle_id = ? order by side",
      [battle.id],
    );
    return {
      battle,
      boosts: boosts.map((row) => ({
        side: Number(row.side) as Side,
        coins: BigInt(row.boost_coins as string),
        count: Number(row.boosts),
      })),
      hosts: await this.hosts(em, battle.id),
      supporters: supporters.map((row) => ({
        side: Number(row.side) as Side,
        userId: row.user_id as string,
        points: BigInt(row.points as string),
      })),
    };
  }

  /** A host's battles, newest first, from before the cursor. */
  async history(
    em: EntityManager,
    hostId: string,
    limit: number,
    before: { at: Date; id: string } | undefined,
  ): Promise<BattleView[]> {
    const rows = await em.execute<Row[]>(
      `select b.* from battles b join battle_hosts h on h.battle_id = b.id
       where h.host_id = ? and (?::timestamptz is null or (b.created_at, b.id) < (?::timestamptz, ?::uuid))
       order by b.created_at desc, b.id desc limit ?`,
      [hostId, before?.at ?? null, before?.at ?? null, before?.id ?? null, limit],
    );
    return Promise.all(rows.map((row) => this.#complete(em, battleRow(row))));
  }

  /** Adds boosts to their sides (the pk-side-boosts projection; the inbox dedupes them). */
  async addSideBoosts(em: EntityManager, boosts: readonly SideBoost[]): Promise<void> {
    if (boosts.length === 0) return;
    await em.execute(
      `insert into side_boosts (battle_id, side, boost_coins, boosts)
       select battle_id, side, sum(coins), count(*) from jsonb_to_recordset(?::jsonb)
         as b(battle_id uuid, side smallint, coins bigint)
       group by battle_id, side order by battle_id, side
       on conflict (battle_id, side) do update
         set boost_coins = side_boosts.boost_coins + excluded.boost_coins, boosts = side_boosts.boosts + excluded.boosts`,
      [
        JSON.stringify(
          boosts.map((b) => ({ battle_id: b.battleId, side: b.side, coins: b.coins.toString() })),
        ),
      ],
    );
  }

  /** Scores a batch of gifts against every battle that may hold them (sql/score_gifts.sql). */
  async scoreGifts(em: EntityManager, gifts: readonly GiftToScore[]): Promise<ScoredGift[]> {
    if (gifts.length === 0) return [];
    const rows = await em.execute<Row[]>("select * from score_gifts(?::jsonb)", [
      JSON.stringify(
        gifts.map((g) => ({
          send_id: g.sendId,
          host_id: g.hostId,
          sender_id: g.senderId,
          gift_id: g.giftId,
          pk_points: g.pkPoints.toString(),
          committed_at: g.committedAt.toISOString(),
        })),
      ),
    ]);
    return rows.map((row) => ({
      battleId: row.battle_id as string,
      sendId: row.send_id as string,
      side: Number(row.side) as Side,
      points: BigInt(row.points as string),
      committedAt: date(row.committed_at)!,
      counted: row.counted as boolean,
      late: row.late as boolean,
    }));
  }

  /**
   * Claims the right to publish these battles' live scores now: a battle's scores are published
   * at most once per `intervalMs`, whichever replica scores it. Returns the claimed battles with
   * the time of their claim (later than any earlier claim's by at least `intervalMs`, so it
   * orders the announcements of a battle) and, for the others that have unpublished scores,
   * when they may be published next.
   */
  async claimScorePublication(
    em: EntityManager,
    battleIds: readonly string[],
    intervalMs: number,
  ): Promise<{ claimed: Map<string, Date>; later: Map<string, Date> }> {
    const rows = await em.execute<Row[]>(
      `with due as (
         update battles set scores_published_at = clock_timestamp()
         where id in (select jsonb_array_elements_text(?::jsonb)::uuid) and state in (2, 3, 4) and scored_at > scores_published_at
           and scores_published_at <= clock_timestamp() - make_interval(secs => ? / 1000.0)
         returning id, scores_published_at)
       select b.id, b.scores_published_at + make_interval(secs => ? / 1000.0) as next_at, due.scores_published_at as claimed_at
       from battles b left join due on due.id = b.id
       where b.id in (select jsonb_array_elements_text(?::jsonb)::uuid) and b.state in (2, 3, 4) and (due.id is not null or b.scored_at > b.scores_published_at)`,
      [JSON.stringify(battleIds), intervalMs, intervalMs, JSON.stringify(battleIds)],
    );
    const claimed = new Map<string, Date>();
    const later = new Map<string, Date>();
    for (const row of rows) {
      const claimedAt = date(row.claimed_at);
      if (claimedAt !== null) claimed.set(row.id as string, claimedAt);
      else later.set(row.id as string, date(row.next_at)!);
    }
    return { claimed, later };
  }

  // Rooms, from the gift service's events.

  async roomStarted(em: EntityManager, room: { roomId: string; hostId: string; at: Date }) {
    await em.execute(
      "insert into host_rooms (room_id, host_id, started_at) values (?, ?, ?) on conflict (room_id) do nothing",
      [room.roomId, room.hostId, room.at],
    );
  }

  async roomEnded(em: EntityManager, room: { roomId: string; hostId: string; at: Date }) {
    await em.execute(
      `insert into host_rooms (room_id, host_id, started_at, ended_at) values (?, ?, ?, ?)
       on conflict (room_id) do update set ended_at = excluded.ended_at`,
      [room.roomId, room.hostId, room.at, room.at],
    );
  }

  // Bonus windows.

  async windowByKey(em: EntityManager, createdBy: string, key: string): Promise<BonusWindowRow | null> {
    const rows = await em.execute<Row[]>(
      "select * from bonus_windows where created_by = ? and idempotency_key = ?",
      [createdBy, key],
    );
    return rows[0] === undefined ? null : windowRow(rows[0]);
  }

  async insertWindow(em: EntityManager, window: BonusWindowRow & { key: string }) {
    await em.execute(
      `insert into bonus_windows (id, multiplier, starts_at, ends_at, battle_id, gift_id, created_by,
         idempotency_key, request_hash) values (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      [
        window.id,
        window.multiplier,
        window.startsAt,
        window.endsAt,
        window.battleId,
        window.giftId,
        window.createdBy,
        window.key,
        window.requestHash,
      ],
    );
  }

  async openWindows(em: EntityManager, now: Date, limit: number): Promise<BonusWindowRow[]> {
    const rows = await em.execute<Row[]>(
      "select * from bonus_windows where ends_at > ? order by starts_at, id limit ?",
      [now, limit],
    );
    return rows.map(windowRow);
  }
}

function recordOf(row: Row): HostRecordCounts {
  return {
    wins: Number(row.wins),
    losses: Number(row.losses),
    draws: Number(row.draws),
    winStreak: Number(row.win_streak),
  };
}
