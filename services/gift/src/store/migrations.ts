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

export const giftMigrations = [
  { name: "0001_gifts", class: Gifts },
  { name: "0002_events_upgrade", class: EventsUpgrade },
];
