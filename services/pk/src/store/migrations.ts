// PK schema. Battles and their hosts; every gift to a participant once per battle (counted,
// outside the window, or late); running totals per side, per host and per supporter; bonus
// windows; host records; which hosts are live (from the gift service's room events).
// State numbers are pk.v1's enums: BattleState, BattleMode, TiePolicy, BattleResult, Side,
// ParticipantStatus. The SQL functions that score gifts live in files of their own
// (sql/score_gifts.sql, sql/count_window.sql), applied by openDatabase after these migrations
// whenever a file changes; 0001 no longer creates them (a database that ran it keeps its
// functions until the files replace them, in the same start-up).
import { Migration, withFunctions } from "@ovation/db";
import { eventFunctionFiles, eventTablesSql } from "@ovation/events";

class Battles extends Migration {
  override async up() {
    for (const sql of eventTablesSql) this.addSql(sql);
    this.addSql(`create table battles (
      id uuid primary key,
      mode smallint not null check (mode in (1, 2)),
      state smallint not null check (state between 1 and 6),
      created_by text not null,
      idempotency_key text not null,
      request_hash bytea not null,
      duration_seconds int not null check (duration_seconds between 1 and 1800),
      tie_policy smallint not null check (tie_policy in (1, 2)),
      bonus_round_seconds int not null check (bonus_round_seconds between 1 and 600),
      bonus_rounds_max int not null check (bonus_rounds_max between 0 and 3),
      bonus_rounds_played int not null default 0,
      created_at timestamptz not null,
      invite_expires_at timestamptz,
      started_at timestamptz,
      ends_at timestamptz,
      ended_at timestamptz,
      settled_at timestamptz,
      result smallint not null default 0 check (result between 0 and 3),
      reason text not null default '',
      score_a bigint not null default 0,
      score_b bigint not null default 0,
      late_a bigint not null default 0,
      late_b bigint not null default 0,
      -- The side whose last host ended their room: the other side wins.
      forfeit_side smallint,
      -- Live score updates: at most one per 100 ms per battle, whichever replica sends it.
      scored_at timestamptz not null default 'epoch',
      scores_published_at timestamptz not null default 'epoch',
      unique (created_by, idempotency_key))`);
    this.addSql(`create table battle_hosts (
      battle_id uuid not null references battles (id),
      host_id text not null,
      side smallint not null check (side in (1, 2)),
      status smallint not null check (status between 1 and 4),
      room_id uuid,
      points bigint not null default 0,
      forfeited_at timestamptz,
      -- True while the battle is pending, running or waiting for settlement.
      busy boolean not null default true,
      primary key (battle_id, host_id))`);
    // A host is in at most one battle that is not settled or cancelled.
    this.addSql("create unique index battle_hosts_one_busy on battle_hosts (host_id) where busy");
    this.addSql("create index battle_hosts_host on battle_hosts (host_id, battle_id)");
    this.addSql(`create table battle_supporters (
      battle_id uuid not null, side smallint not null, user_id text not null, points bigint not null,
      primary key (battle_id, side, user_id))`);
    this.addSql(
      "create index battle_supporters_rank on battle_supporters (battle_id, side, points desc, user_id)",
    );
    this.addSql(`create table battle_gifts (
      battle_id uuid not null,
      send_id uuid not null,
      side smallint not null,
      host_id text not null,
      sender_id text not null,
      gift_id text not null,
      base_points bigint not null,
      multiplier int not null,
      points bigint not null,
      committed_at timestamptz not null,
      counted boolean not null,
      late boolean not null,
      primary key (battle_id, send_id))`);
    this.addSql(`create table bonus_windows (
      id uuid primary key,
      multiplier int not null check (multiplier between 2 and 10),
      starts_at timestamptz not null,
      ends_at timestamptz not null check (ends_at > starts_at),
      battle_id uuid,
      gift_id text,
      created_by text not null,
      idempotency_key text not null,
      request_hash bytea not null,
      unique (created_by, idempotency_key))`);
    this.addSql("create index bonus_windows_ends on bonus_windows (ends_at)");
    this.addSql(`create table host_records (
      host_id text primary key,
      wins int not null default 0,
      losses int not null default 0,
      draws int not null default 0,
      win_streak int not null default 0,
      updated_at timestamptz not null default now())`);
    // Live rooms from gift's room events. Keyed by room, so a RoomEnded processed before its
    // RoomStarted still leaves the room ended: a host is live while a room of theirs is not.
    this.addSql(`create table host_rooms (
      room_id uuid primary key,
      host_id text not null,
      started_at timestamptz not null,
      ended_at timestamptz)`);
    this.addSql(
      "create index host_rooms_live on host_rooms (host_id, started_at desc) where ended_at is null",
    );
  }
}

/**
 * Side boosts: coins viewers spent boosting each side of a battle, from BoostPurchased (the
 * pk-side-boosts consumer's projection, replayable: raw SQL, no foreign keys). Display only.
 */
class SideBoosts extends Migration {
  override async up() {
    this.addSql(`create table side_boosts (
      battle_id uuid not null,
      side smallint not null,
      boost_coins bigint not null,
      boosts int not null,
      primary key (battle_id, side))`);
  }
}

/** One gift of a scoring batch, as score_gifts reads it (pk-store.ts scoreGifts). */
class GiftRecords extends Migration {
  override async up() {
    this.addSql(`create type gift_to_score as (
      send_id uuid,
      host_id text,
      sender_id text,
      gift_id text,
      pk_points bigint,
      committed_at timestamptz)`);
  }
}

/**
 * Invitations that hold no one (docs/decisions/0030). A host who has not answered an invitation
 * is no longer busy: only accepting (or creating) a battle makes a host busy, so re-inviting
 * cannot keep a host out of every other battle. And an inviter whose invitation a host declined
 * or let expire may not invite that host again until `until` (PK_REINVITE_COOLDOWN_SECONDS).
 */
class InvitationsHoldNoOne extends Migration {
  override async up() {
    // Invited hosts of battles still pending (1 = INVITED) are free from now on.
    this.addSql("update battle_hosts set busy = false where busy and status = 1");
    this.addSql(`create table invite_cooldowns (
      inviter_id text not null,
      invitee_id text not null,
      until timestamptz not null,
      primary key (inviter_id, invitee_id))`);
    // The unanswered invitations of a host, found when they accept, invite or leave their room.
    this.addSql("create index battle_hosts_invited on battle_hosts (host_id) where status = 1");
  }
}

/** The settle sweep's search: battles ENDED (state 4) before a time (app/battles.ts). */
class EndedBattles extends Migration {
  override async up() {
    this.addSql("create index battles_ended on battles (ended_at) where state = 4");
  }
}

export const pkMigrations = withFunctions(
  [
    { name: "0001_battles", class: Battles },
    { name: "0002_side_boosts", class: SideBoosts },
    { name: "0003_gift_records", class: GiftRecords },
    { name: "0004_invitations_hold_no_one", class: InvitationsHoldNoOne },
    { name: "0005_ended_battles", class: EndedBattles },
  ],
  [
    ...eventFunctionFiles,
    new URL("./sql/score_gifts.sql", import.meta.url),
    new URL("./sql/count_window.sql", import.meta.url),
  ],
);
