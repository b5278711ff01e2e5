// Gift schema: the catalog, live rooms, sends (the idempotency record of SendGift, with the
// combo streak), and the read models the gift-log consumer builds from GiftSent events. The
// claim functions live in files of their own (sql/claim_send.sql, claim_sends.sql), applied
// by openDatabase after these migrations whenever a file changes; 0003 and 0004 no longer
// create them.
import { Migration, withFunctions } from "@ovation/db";
import { eventFunctionFiles, eventTablesSql, eventTablesUpgradeSql } from "@ovation/events";

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
 * One round trip per send: claim_send (sql/claim_send.sql) records the send (the idempotency
 * record), checks the room is live, takes the next combo step and returns everything the
 * GiftSent payload is built from, in one call. The gift's name, price, points and animation are
 * stored with the claim, so a retry rebuilds exactly the payload of the first attempt even if
 * the catalog changed in between.
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
  }
}

/**
 * Group commit of claims: claim_sends (sql/claim_sends.sql) applies claim_send to each item of
 * a JSON array in order, in one transaction and one commit. This step created it and does
 * nothing now; it stays so that the history's names match every database's.
 */
class ClaimBatches extends Migration {
  override async up() {}
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

/** Claims are never undone (docs/decisions/0028): release_send goes. */
class ClaimsStay extends Migration {
  override async up() {
    this.addSql("drop function if exists release_send(uuid, text, uuid, text, int)");
  }
}

export const giftMigrations = withFunctions(
  [
    { name: "0001_gifts", class: Gifts },
    { name: "0002_events_upgrade", class: EventsUpgrade },
    { name: "0003_one_round_trip", class: OneRoundTrip },
    { name: "0004_claim_batches", class: ClaimBatches },
    { name: "0005_discovery", class: Discovery },
    { name: "0006_claims_stay", class: ClaimsStay },
  ],
  // claim_sends calls claim_send, so it comes after it.
  [
    ...eventFunctionFiles,
    new URL("./sql/claim_send.sql", import.meta.url),
    new URL("./sql/claim_sends.sql", import.meta.url),
  ],
);
