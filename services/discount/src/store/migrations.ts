// Discount schema. A campaign row holds the counter every redemption moves; claims are applied
// a batch at a time by claim_redemptions, under that row's lock, so a flash crowd costs one
// counter update per batch instead of one per user. Single-use codes are stored hashed. The
// claim function lives in a file of its own (sql/claim_redemptions.sql), applied by
// openDatabase after these migrations whenever it changes; 0001 no longer creates it.
import { Migration, withFunctions } from "@ovation/db";
import { eventFunctionFiles, eventTablesSql } from "@ovation/events";

class Campaigns extends Migration {
  override async up() {
    for (const sql of eventTablesSql) this.addSql(sql);
    this.addSql(`create table campaigns (
      id uuid primary key,
      name text not null,
      kind smallint not null check (kind in (1, 2)),
      code text unique,
      asset text not null,
      amount bigint not null check (amount > 0),
      redemption_limit bigint not null check (redemption_limit >= 0),
      per_user_limit int not null check (per_user_limit between 1 and 100),
      starts_at timestamptz not null,
      ends_at timestamptz not null check (ends_at > starts_at),
      status smallint not null check (status between 1 and 4),
      redeemed bigint not null default 0 check (redeemed between 0 and redemption_limit),
      created_by text not null,
      idempotency_key text not null,
      request_hash bytea not null,
      created_at timestamptz not null,
      -- CampaignChanged events: at most one per 100 ms per campaign, whichever replica sends it.
      changed_at timestamptz not null default 'epoch',
      published_at timestamptz not null default 'epoch',
      unique (created_by, idempotency_key),
      check ((kind = 1) = (code is not null)))`);
    this.addSql(`create table redemptions (
      id uuid primary key,
      campaign_id uuid not null references campaigns (id),
      user_id text not null,
      position bigint not null,
      code_id uuid,
      created_at timestamptz not null,
      credited_at timestamptz,
      unique (campaign_id, position))`);
    this.addSql("create index redemptions_user on redemptions (campaign_id, user_id)");
    this.addSql("create index redemptions_time on redemptions (campaign_id, created_at)");
    this.addSql(`create table codes (
      id uuid primary key,
      campaign_id uuid not null references campaigns (id),
      hash bytea not null unique,
      redeemed_by text,
      redeemed_at timestamptz)`);
    this.addSql(`create table code_batches (
      campaign_id uuid not null references campaigns (id),
      idempotency_key text not null,
      count int not null,
      created_at timestamptz not null,
      primary key (campaign_id, idempotency_key))`);
  }
}

/**
 * Redemptions by idempotency key (docs/decisions/0031): a retried Redeem finds the redemption its
 * key recorded. Unique per campaign, not per user alone: claim_redemptions checks the key under
 * the campaign's row lock, so it can never collide inside one campaign, while two campaigns'
 * claims run under different locks and a unique violation between them would fail every other
 * request of their batches. claim_redemptions gains output columns, so the old one is dropped
 * (its file creates the new one in the same start-up).
 */
class RedemptionKeys extends Migration {
  override async up() {
    this.addSql("alter table redemptions add column idempotency_key text");
    this.addSql(`create unique index redemptions_key on redemptions (user_id, idempotency_key, campaign_id)
      where idempotency_key is not null`);
    this.addSql("drop function if exists claim_redemptions(uuid, jsonb, timestamptz)");
  }
}

export const discountMigrations = withFunctions(
  [
    { name: "0001_campaigns", class: Campaigns },
    { name: "0002_redemption_keys", class: RedemptionKeys },
  ],
  [...eventFunctionFiles, new URL("./sql/claim_redemptions.sql", import.meta.url)],
);
