// PK schema. Battles and their hosts; every gift to a participant once per battle (counted,
// outside the window, or late); running totals per side, per host and per supporter; bonus
// windows; host records; which hosts are live (from the gift service's room events).
// State numbers are pk.v1's enums: BattleState, BattleMode, TiePolicy, BattleResult, Side,
// ParticipantStatus.
import { Migration } from "@ovation/db";
import { eventTablesSql } from "@ovation/events";

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
    this.addSql(scoreGiftsFunction);
    this.addSql(countWindowFunction);
  }
}

/**
 * score_gifts records a batch of gifts (JSON: send_id, host_id, sender_id, gift_id, pk_points,
 * committed_at) against every battle whose receiving host takes part and whose window may hold
 * them, once per battle and gift, and adds the counted ones to the totals. A gift counts when
 * its debit committed inside the battle's current window and before its host forfeited; it is
 * late when the battle was already settled; otherwise it is kept uncounted, for a bonus round
 * that may still extend the window. Points are pk_points × the highest bonus multiplier in
 * force at the commit time. Returns the new rows.
 */
const scoreGiftsFunction = `
create function score_gifts(p_gifts jsonb)
returns table (battle_id uuid, send_id uuid, side smallint, points bigint, committed_at timestamptz,
               counted boolean, late boolean)
language plpgsql set search_path from current as $$
#variable_conflict use_column
begin
  -- The battles first, in id order: settlement and the timers lock the same rows, so a gift is
  -- scored either wholly before a battle settles or after it, as late.
  perform 1 from battles b
  where b.id in (select h.battle_id from battle_hosts h
                 where h.host_id in (select x.host_id from jsonb_to_recordset(p_gifts) as x(host_id text)))
    and b.state between 2 and 5
  order by b.id for update;
  return query
  with g as (
    select * from jsonb_to_recordset(p_gifts)
      as x(send_id uuid, host_id text, sender_id text, gift_id text, pk_points bigint, committed_at timestamptz)),
  candidates as (
    select b.id as battle_id, b.state, b.ends_at, h.side, h.forfeited_at, g.*,
           coalesce((select max(w.multiplier) from bonus_windows w
                     where w.starts_at <= g.committed_at and g.committed_at < w.ends_at
                       and (w.battle_id is null or w.battle_id = b.id)
                       and (w.gift_id is null or w.gift_id = g.gift_id)), 1) as multiplier
    from g
    join battle_hosts h on h.host_id = g.host_id and h.status in (2, 4)
    join battles b on b.id = h.battle_id
    where b.state between 2 and 5 and b.started_at <= g.committed_at
      and (b.state < 5 or g.committed_at < b.ends_at)),
  inserted as (
    insert into battle_gifts (battle_id, send_id, side, host_id, sender_id, gift_id, base_points, multiplier,
                              points, committed_at, counted, late)
    select c.battle_id, c.send_id, c.side, c.host_id, c.sender_id, c.gift_id, c.pk_points, c.multiplier,
           c.pk_points * c.multiplier, c.committed_at,
           c.state < 5 and c.committed_at < c.ends_at and (c.forfeited_at is null or c.committed_at < c.forfeited_at),
           c.state = 5
    from candidates c
    on conflict do nothing
    returning *),
  by_battle as (
    select i.battle_id,
           coalesce(sum(i.points) filter (where i.counted and i.side = 1), 0) as a,
           coalesce(sum(i.points) filter (where i.counted and i.side = 2), 0) as b,
           coalesce(sum(i.points) filter (where i.late and i.side = 1), 0) as late_a,
           coalesce(sum(i.points) filter (where i.late and i.side = 2), 0) as late_b,
           bool_or(i.counted) as scored
    from inserted i where i.counted or i.late group by i.battle_id),
  totals as (
    update battles t set score_a = t.score_a + c.a, score_b = t.score_b + c.b,
                         late_a = t.late_a + c.late_a, late_b = t.late_b + c.late_b,
                         scored_at = case when c.scored then clock_timestamp() else t.scored_at end
    from by_battle c where t.id = c.battle_id
    returning t.id),
  hosts as (
    update battle_hosts h set points = h.points + s.points
    from (select i.battle_id, i.host_id, sum(i.points) as points from inserted i where i.counted
          group by i.battle_id, i.host_id) s
    where h.battle_id = s.battle_id and h.host_id = s.host_id
    returning h.battle_id),
  supporters as (
    insert into battle_supporters as s (battle_id, side, user_id, points)
    select i.battle_id, i.side, i.sender_id, sum(i.points) from inserted i where i.counted
    group by i.battle_id, i.side, i.sender_id
    on conflict (battle_id, side, user_id) do update set points = s.points + excluded.points
    returning s.battle_id)
  select i.battle_id, i.send_id, i.side, i.points, i.committed_at, i.counted, i.late from inserted i;
end
$$`;

/**
 * count_window adds to the totals the gifts a battle kept uncounted that its current window
 * now holds: after a bonus round extended it, the gifts committed in the extra time count.
 */
const countWindowFunction = `
create function count_window(p_battle uuid)
returns void language plpgsql set search_path from current as $$
declare
  v_ends timestamptz;
begin
  select ends_at into v_ends from battles where id = p_battle;
  with newly as (
    update battle_gifts g set counted = true
    from battle_hosts h
    where g.battle_id = p_battle and not g.counted and not g.late and g.committed_at < v_ends
      and h.battle_id = g.battle_id and h.host_id = g.host_id
      and (h.forfeited_at is null or g.committed_at < h.forfeited_at)
    returning g.*),
  battle as (
    update battles b set score_a = b.score_a + coalesce((select sum(points) from newly where side = 1), 0),
                         score_b = b.score_b + coalesce((select sum(points) from newly where side = 2), 0),
                         scored_at = clock_timestamp()
    where b.id = p_battle returning b.id),
  hosts as (
    update battle_hosts h set points = h.points + s.points
    from (select host_id, sum(points) as points from newly group by host_id) s
    where h.battle_id = p_battle and h.host_id = s.host_id returning h.host_id)
  insert into battle_supporters as s (battle_id, side, user_id, points)
  select p_battle, side, sender_id, sum(points) from newly group by side, sender_id
  on conflict (battle_id, side, user_id) do update set points = s.points + excluded.points;
end
$$`;

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

/**
 * Invitations that hold no one (docs/decisions/0031). A host who has not answered an invitation
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

export const pkMigrations = [
  { name: "0001_battles", class: Battles },
  { name: "0002_side_boosts", class: SideBoosts },
  { name: "0003_invitations_hold_no_one", class: InvitationsHoldNoOne },
];
