// Discount schema. A campaign row holds the counter every redemption moves; claims are applied
// a batch at a time by claim_redemptions, under that row's lock, so a flash crowd costs one
// counter update per batch instead of one per user. Single-use codes are stored hashed.
import { Migration } from "@ovation/db";
import { eventTablesSql } from "@ovation/events";

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
    this.addSql(claimRedemptionsFunction);
  }
}

/**
 * claim_redemptions applies a batch of redemption requests (JSON: id, user_id, code_id) to one
 * campaign, in order, under the campaign row's lock: each gets 'redeemed' with its position,
 * or 'already' (the user has per_user_limit redemptions, or the code was used), 'exhausted',
 * or 'inactive' with the reason. One counter update for the whole batch.
 */
const claimRedemptionsFunction = `
create function claim_redemptions(p_campaign uuid, p_requests jsonb, p_now timestamptz)
returns table (id uuid, outcome text, "position" bigint, reason text, redemption_limit bigint)
language plpgsql set search_path from current as $$
declare
  c campaigns%rowtype;
  r record;
  v_redeemed bigint;
  v_inactive text;
  v_mine int;
begin
  select * into c from campaigns where campaigns.id = p_campaign for update;
  if not found then
    return query select x.id, 'inactive', null::bigint, 'unknown campaign', 0::bigint
      from jsonb_to_recordset(p_requests) as x(id uuid);
    return;
  end if;
  v_inactive := case
    when c.status = 1 then 'the campaign has not been activated'
    when c.status = 3 then 'the campaign is paused'
    when c.status = 4 then 'the campaign has ended'
    when p_now < c.starts_at then 'the campaign has not started'
    when p_now >= c.ends_at then 'the campaign has expired'
  end;
  v_redeemed := c.redeemed;
  redemption_limit := c.redemption_limit;
  for r in select * from jsonb_to_recordset(p_requests) as x(id uuid, user_id text, code_id uuid) loop
    if v_inactive is not null then
      id := r.id; outcome := 'inactive'; "position" := null; reason := v_inactive; return next;
      continue;
    end if;
    -- A user who already has their share is told so, also once every slot is taken.
    select count(*) into v_mine from redemptions d where d.campaign_id = p_campaign and d.user_id = r.user_id;
    if v_mine >= c.per_user_limit then
      id := r.id; outcome := 'already'; "position" := null; reason := null; return next;
      continue;
    end if;
    if v_redeemed >= c.redemption_limit then
      id := r.id; outcome := 'exhausted'; "position" := null; reason := null; return next;
      continue;
    end if;
    if r.code_id is not null then
      update codes set redeemed_by = r.user_id, redeemed_at = p_now
        where codes.id = r.code_id and codes.campaign_id = p_campaign and redeemed_by is null;
      if not found then
        id := r.id; outcome := 'already'; "position" := null; reason := 'code used'; return next;
        continue;
      end if;
    end if;
    v_redeemed := v_redeemed + 1;
    insert into redemptions (id, campaign_id, user_id, position, code_id, created_at)
      values (r.id, p_campaign, r.user_id, v_redeemed, r.code_id, p_now);
    id := r.id; outcome := 'redeemed'; "position" := v_redeemed; reason := null; return next;
  end loop;
  if v_redeemed <> c.redeemed then
    update campaigns set redeemed = v_redeemed, changed_at = clock_timestamp() where campaigns.id = p_campaign;
  end if;
end
$$`;

export const discountMigrations = [{ name: "0001_campaigns", class: Campaigns }];
