// Gift schema: the catalog, live rooms, sends (the idempotency record of SendGift, with the
// combo streak), and the read models the gift-log consumer builds from GiftSent events.
import { Migration } from "@ovation/db";
import { eventTablesSql, eventTablesUpgradeSql } from "@ovation/events";

class Gifts extends Migration {
  override async up() {
    for (const sql of eventTablesSql) this.addSql(sql);
    this.addSql(`create table gifts (
      id text primary key check (id ~ '^[a-z0-9-]{1,64}$'),
      name text not null,
      price bigint not null check (price between 1 and 1000000),
      pk_points bigint not null check (pk_points between 0 and 1000000),
      vip_only boolean not null default false,
      min_vip_level int not null default 0 check (min_vip_level between 0 and 100),
      animation_key text not null default '',
      active boolean not null default true,
      updated_at timestamptz not null default now())`);
    this.addSql(`create table rooms (
      id uuid primary key,
      host_id text not null,
      title text not null default '',
      status smallint not null check (status in (1, 2)),
      started_at timestamptz not null,
      ended_at timestamptz)`);
    // A host has at most one live room; the index settles concurrent StartLive calls.
    this.addSql("create unique index rooms_one_live_per_host on rooms (host_id) where status = 1");
    this.addSql(`create table sends (
      id uuid primary key,
      sender_id text not null,
      idempotency_key text not null,
      room_id uuid not null,
      gift_id text not null,
      count int not null check (count between 1 and 9999),
      combo int not null default 1,
      -- The GiftSent payload as first built: a retry sends exactly these bytes to the wallet,
      -- so its fingerprint matches even if the catalog changed in between.
      event bytea,
      created_at timestamptz not null,
      unique (sender_id, idempotency_key))`);
    this.addSql(`create table combos (
      sender_id text not null,
      room_id uuid not null,
      gift_id text not null,
      streak int not null,
      last_at timestamptz not null,
      primary key (sender_id, room_id, gift_id))`);
    this.addSql(`create table gift_log (
      id uuid primary key,
      sender_id text not null,
      host_id text not null,
      room_id uuid not null,
      gift_id text not null,
      gift_name text not null,
      count int not null,
      total bigint not null,
      combo int not null,
      sent_at timestamptz not null)`);
    this.addSql("create index gift_log_sender on gift_log (sender_id, sent_at desc, id desc)");
    this.addSql("create index gift_log_host on gift_log (host_id, sent_at desc, id desc)");
    this.addSql(`create table room_gifters (
      room_id uuid not null, user_id text not null, amount bigint not null,
      primary key (room_id, user_id))`);
    this.addSql("create index room_gifters_rank on room_gifters (room_id, amount desc)");
    // period: 'day:2026-11-22', 'week:2026-11-16' (Monday), 'all'.
    this.addSql(`create table host_totals (
      period text not null, host_id text not null, amount bigint not null,
      primary key (period, host_id))`);
    this.addSql("create index host_totals_rank on host_totals (period, amount desc)");
  }
}

/** Outbox rows that can fail on their own, attempts per consumer failure (packages/events). */
class EventsUpgrade extends Migration {
  override async up() {
    for (const sql of eventTablesUpgradeSql) this.addSql(sql);
  }
}

/**
 * One round trip per send: claim_send records the send (the idempotency record), checks the
 * room is live (the authoritative check; the in-process room cache only refuses early), takes
 * the next combo step and returns everything the GiftSent payload is built from, in one call.
 * The gift's name, price, points and animation are stored with the claim, so a retry rebuilds
 * exactly the payload of the first attempt even if the catalog changed in between.
 */
class OneRoundTrip extends Migration {
  override async up() {
    this.addSql(`alter table sends
      add column host_id text,
      add column gift_name text,
      add column unit_price bigint,
      add column pk_points bigint,
      add column animation_key text,
      add column sender_vip_level int`);
    this.addSql(claimSendFunction);
    this.addSql(releaseSendFunction);
  }
}

/**
 * claim_send returns one row: outcome 'claimed' (a new send), 'existing' (the same key and
 * request before: its first claim, whatever happened to the room since), 'conflict' (the same
 * key, another room, gift or count), 'room_not_found', 'room_not_live' or 'self_gift'. The combo streak row is created if missing, then locked, so
 * concurrent sends of one (sender, room, gift) take their steps one after another: a send
 * within p_window_ms of the previous one (or stamped just before it, having waited for the
 * lock) continues the streak, any other starts again at 1.
 */
const claimSendFunction = `
create function claim_send(
  p_id uuid, p_sender text, p_key text, p_room uuid, p_gift text, p_count int, p_now timestamptz,
  p_window_ms int, p_gift_name text, p_unit_price bigint, p_pk_points bigint, p_animation_key text,
  p_vip_level int)
returns table (outcome text, id uuid, combo int, created_at timestamptz, room_id uuid, gift_id text,
  count int, host_id text, gift_name text, unit_price bigint, pk_points bigint, animation_key text,
  sender_vip_level int, event bytea)
language plpgsql set search_path from current as $$
#variable_conflict use_column
declare
  v_host text;
  v_status smallint;
  v_streak int;
  v_last timestamptz;
  v_combo int;
begin
  return query select case when s.room_id = p_room and s.gift_id = p_gift and s.count = p_count
                           then 'existing' else 'conflict' end,
                      s.id, s.combo, s.created_at, s.room_id, s.gift_id, s.count, s.host_id, s.gift_name,
                      s.unit_price, s.pk_points, s.animation_key, s.sender_vip_level, s.event
               from sends s where s.sender_id = p_sender and s.idempotency_key = p_key;
  if found then
    return;
  end if;
  select r.host_id, r.status into v_host, v_status from rooms r where r.id = p_room;
  if not found or v_status <> 1 then
    return query select case when v_status is null then 'room_not_found' else 'room_not_live' end,
                        null::uuid, null::int, null::timestamptz, null::uuid, null::text,
                        null::int, null::text, null::text, null::bigint, null::bigint, null::text, null::int, null::bytea;
    return;
  end if;
  if v_host = p_sender then
    return query select 'self_gift', null::uuid, null::int, null::timestamptz, null::uuid, null::text,
                        null::int, null::text, null::text, null::bigint, null::bigint, null::text, null::int, null::bytea;
    return;
  end if;
  insert into sends (id, sender_id, idempotency_key, room_id, gift_id, count, combo, created_at, host_id,
                     gift_name, unit_price, pk_points, animation_key, sender_vip_level)
  values (p_id, p_sender, p_key, p_room, p_gift, p_count, 1, p_now, v_host, p_gift_name, p_unit_price,
          p_pk_points, p_animation_key, p_vip_level)
  on conflict (sender_id, idempotency_key) do nothing;
  if not found then
    -- A concurrent claim with the same key won: answer with it.
    return query select * from claim_send(p_id, p_sender, p_key, p_room, p_gift, p_count, p_now, p_window_ms,
                                          p_gift_name, p_unit_price, p_pk_points, p_animation_key, p_vip_level);
    return;
  end if;
  insert into combos (sender_id, room_id, gift_id, streak, last_at) values (p_sender, p_room, p_gift, 0, 'epoch')
  on conflict do nothing;
  select c.streak, c.last_at into v_streak, v_last from combos c
  where c.sender_id = p_sender and c.room_id = p_room and c.gift_id = p_gift for update;
  v_combo := case when p_now - v_last <= make_interval(secs => p_window_ms / 1000.0) then v_streak + 1 else 1 end;
  update combos c set streak = v_combo, last_at = greatest(c.last_at, p_now)
  where c.sender_id = p_sender and c.room_id = p_room and c.gift_id = p_gift;
  update sends s set combo = v_combo where s.id = p_id;
  return query select 'claimed', p_id, v_combo, p_now, p_room, p_gift, p_count, v_host, p_gift_name, p_unit_price,
                      p_pk_points, p_animation_key, p_vip_level, null::bytea;
end
$$`;

/** Forgets a claim whose payment was refused, so the streak and the key are as before. */
const releaseSendFunction = `
create function release_send(p_id uuid, p_sender text, p_room uuid, p_gift text, p_combo int)
returns void language sql set search_path from current as $$
  delete from sends where id = p_id;
  update combos set streak = streak - 1
  where sender_id = p_sender and room_id = p_room and gift_id = p_gift and streak = p_combo and streak > 1;
  delete from combos
  where p_combo = 1 and sender_id = p_sender and room_id = p_room and gift_id = p_gift and streak = 1;
$$`;

/**
 * Group commit of claims: claim_sends applies claim_send to each item of a JSON array in order,
 * in one transaction and one commit, each item with its own outcome.
 */
class ClaimBatches extends Migration {
  override async up() {
    this.addSql(`create function claim_sends(p_items jsonb, p_window_ms int)
      returns table (idx int, outcome text, id uuid, combo int, created_at timestamptz, room_id uuid,
        gift_id text, count int, host_id text, gift_name text, unit_price bigint, pk_points bigint,
        animation_key text, sender_vip_level int, event bytea)
      language sql set search_path from current as $$
        select i.n::int, c.*
        from jsonb_array_elements(p_items) with ordinality as i(e, n)
        cross join lateral claim_send((i.e ->> 'id')::uuid, i.e ->> 'sender', i.e ->> 'key', (i.e ->> 'room')::uuid,
          i.e ->> 'gift', (i.e ->> 'count')::int, (i.e ->> 'now')::timestamptz, p_window_ms, i.e ->> 'gift_name',
          (i.e ->> 'unit_price')::bigint, (i.e ->> 'pk_points')::bigint, i.e ->> 'animation_key',
          (i.e ->> 'vip_level')::int) c
        order by i.n
      $$`);
  }
}

/**
 * Boosts. boost_purchases is the idempotency record of PurchaseBoost (a retry sends the wallet
 * the same event bytes). discovery_boosts and discovery_scores are the discovery projection the
 * gift-discovery consumer builds from BoostPurchased (replayable: raw SQL, no foreign keys):
 * every boost once, and per target the coins of its boosts that have not expired. Rooms are
 * ranked with the coins gifted in them in the last hour, hence the index on gift_log.
 */
class Discovery extends Migration {
  override async up() {
    this.addSql(`create table boost_purchases (
      id uuid primary key,
      buyer_id text not null,
      idempotency_key text not null,
      target_type smallint not null,
      target_id text not null,
      amount bigint not null,
      duration_hours int not null,
      event bytea not null,
      created_at timestamptz not null default now(),
      unique (buyer_id, idempotency_key))`);
    this.addSql(`create table discovery_boosts (
      boost_id uuid primary key,
      target_type smallint not null,
      target_id text not null,
      amount bigint not null,
      expires_at timestamptz not null,
      expired boolean not null)`);
    this.addSql("create index discovery_boosts_due on discovery_boosts (expires_at) where not expired");
    this.addSql(`create table discovery_scores (
      target_type smallint not null,
      target_id text not null,
      boost bigint not null,
      primary key (target_type, target_id))`);
    this.addSql("create index gift_log_room on gift_log (room_id, sent_at)");
  }
}

export const giftMigrations = [
  { name: "0001_gifts", class: Gifts },
  { name: "0002_events_upgrade", class: EventsUpgrade },
  { name: "0003_one_round_trip", class: OneRoundTrip },
  { name: "0004_claim_batches", class: ClaimBatches },
  { name: "0005_discovery", class: Discovery },
];
