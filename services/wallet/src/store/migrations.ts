// Wallet schema. The ledger's write path is one SQL function, post_transfers (0004; before it,
// post_transfer did one transfer per call): a batch of transfers is one round trip and one
// transaction, and each transfer's idempotency check, debit, credit, journal row and outbox
// rows commit together or not at all.
import { Migration } from "@ovation/db";
import { eventTablesSql, eventTablesUpgradeSql } from "@ovation/events";

class Ledger extends Migration {
  override async up() {
    for (const sql of eventTablesSql) this.addSql(sql);
    this.addSql(`create table assets (
      code text primary key check (code ~ '^[A-Z][A-Z0-9]{1,15}$'),
      created_at timestamptz not null default now())`);
    // A user account is one row; a system account is spread over shard rows so that crediting
    // gifts-in-transit or revenue never serialises on one hot row. Users can never go below
    // zero: the check constraint is the guarantee, the conditional update only the fast path.
    this.addSql(`create table accounts (
      owner text not null check (owner ~ '^(user|system):[A-Za-z0-9_.@-]{1,128}$'),
      asset text not null references assets (code),
      shard smallint not null default 0 check (shard >= 0),
      balance bigint not null default 0,
      is_system boolean generated always as (owner like 'system:%') stored,
      updated_at timestamptz not null default now(),
      primary key (owner, asset, shard),
      constraint user_balance_not_negative check (is_system or balance >= 0),
      constraint user_account_single_row check (is_system or shard = 0))`);
    this.addSql(`create table transfers (
      id uuid primary key,
      debit_owner text not null,
      credit_owner text not null,
      asset text not null references assets (code),
      amount bigint not null check (amount > 0),
      kind smallint not null check (kind > 0),
      reference text not null default '',
      metadata jsonb not null default '{}',
      hold_id uuid,
      debit_balance bigint not null,
      idempotency_key text,
      request_hash bytea,
      created_at timestamptz not null,
      check (debit_owner <> credit_owner))`);
    this.addSql("create unique index transfers_idempotency_key on transfers (idempotency_key)");
    this.addSql("create index transfers_debit_owner on transfers (debit_owner, id)");
    this.addSql("create index transfers_credit_owner on transfers (credit_owner, id)");
    this.addSql(`create table holds (
      id uuid primary key,
      owner text not null,
      asset text not null references assets (code),
      amount bigint not null check (amount > 0),
      status smallint not null check (status between 1 and 4),
      reference text not null default '',
      captured_amount bigint not null default 0 check (captured_amount >= 0 and captured_amount <= amount),
      idempotency_key text not null unique,
      request_hash bytea not null,
      expires_at timestamptz not null,
      created_at timestamptz not null default now(),
      updated_at timestamptz not null default now())`);
    this.addSql("create index holds_pending_expiry on holds (expires_at) where status = 1");
    this.addSql(addToSystemAccountFunction);
    this.addSql(postTransferFunction("create"));
  }
}

/** Adds `delta` to a random shard of a system account (creating the shard row on first use). */
const addToSystemAccountFunction = `
create function add_to_system_account(p_owner text, p_asset text, p_delta bigint, p_shards int)
returns bigint language plpgsql set search_path from current as $$
declare
  v_shard int := floor(random() * p_shards)::int;
  v_balance bigint;
begin
  update accounts set balance = balance + p_delta, updated_at = now()
  where owner = p_owner and asset = p_asset and shard = v_shard
  returning balance into v_balance;
  if not found then
    insert into accounts as a (owner, asset, shard, balance) values (p_owner, p_asset, v_shard, p_delta)
    on conflict (owner, asset, shard) do update set balance = a.balance + p_delta, updated_at = now()
    returning a.balance into v_balance;
  end if;
  return v_balance;
end
$$`;

/**
 * post_transfer moves p_amount from p_debit to p_credit and returns the debit balance after it.
 * Errors use our own SQLSTATEs: OV001 insufficient funds, OV002 idempotency key reused for a
 * different request. Copies of one request are serialised by an advisory lock on the key.
 */
const postTransferFunction = (createOrReplace: "create" | "create or replace") => `
${createOrReplace} function post_transfer(
  p_id uuid, p_debit text, p_credit text, p_asset text, p_amount bigint, p_kind smallint,
  p_reference text, p_metadata jsonb, p_hold_id uuid, p_idempotency_key text,
  p_request_hash bytea, p_created_at timestamptz, p_events jsonb, p_system_shards int)
returns table (transfer_id uuid, debit_balance bigint, created_at timestamptz, replayed boolean)
language plpgsql
-- Pin name resolution to the wallet's schema, whatever the caller's search_path.
set search_path from current
as $$
declare
  v_existing transfers%rowtype;
  v_balance bigint;
  v_outbox_id bigint;
begin
  -- Concurrent copies of one request queue here, so the second sees the first's result
  -- instead of failing its debit against the balance the first already spent.
  perform pg_advisory_xact_lock(hashtextextended(p_idempotency_key, 0));
  select * into v_existing from transfers t where t.idempotency_key = p_idempotency_key;
  if found then
    if v_existing.request_hash <> p_request_hash then
      raise exception using errcode = 'OV002', message = 'idempotency key reused with a different request';
    end if;
    return query select v_existing.id, v_existing.debit_balance, v_existing.created_at, true;
    return;
  end if;

  if p_debit like 'system:%' then
    v_balance := add_to_system_account(p_debit, p_asset, -p_amount, p_system_shards);
  else
    update accounts a set balance = a.balance - p_amount, updated_at = now()
    where a.owner = p_debit and a.asset = p_asset and a.shard = 0 and a.balance >= p_amount
    returning a.balance into v_balance;
    if not found then
      raise exception using errcode = 'OV001', message = 'insufficient funds';
    end if;
  end if;

  if p_credit like 'system:%' then
    perform add_to_system_account(p_credit, p_asset, p_amount, p_system_shards);
  else
    -- A plain update first: an upsert's speculative insert costs more on this hot path.
    update accounts a set balance = a.balance + p_amount, updated_at = now()
    where a.owner = p_credit and a.asset = p_asset and a.shard = 0;
    if not found then
      insert into accounts as a (owner, asset, shard, balance) values (p_credit, p_asset, 0, p_amount)
      on conflict (owner, asset, shard) do update set balance = a.balance + p_amount, updated_at = now();
    end if;
  end if;

  insert into transfers (id, debit_owner, credit_owner, asset, amount, kind, reference, metadata,
                         hold_id, debit_balance, idempotency_key, request_hash, created_at)
  values (p_id, p_debit, p_credit, p_asset, p_amount, p_kind, p_reference, p_metadata,
          p_hold_id, v_balance, p_idempotency_key, p_request_hash, p_created_at);

  with inserted as (
    insert into outbox (event_id, subject, type, payload, headers)
    select (e ->> 'event_id')::uuid, e ->> 'subject', e ->> 'type', decode(e ->> 'payload', 'base64'),
           coalesce(e -> 'headers', '{}')
    from jsonb_array_elements(p_events) e
    returning id)
  select min(id) into v_outbox_id from inserted;
  if v_outbox_id is not null then
    perform outbox_wake(v_outbox_id);
  end if;

  return query select p_id, v_balance, p_created_at, false;
end
$$`;

/** Events keep their headers (trace context) through post_transfer's outbox insert. */
class EventHeaders extends Migration {
  override async up() {
    this.addSql(postTransferFunction("create or replace"));
  }
}

/** Outbox rows that can fail on their own, attempts per consumer failure (packages/events). */
class EventsUpgrade extends Migration {
  override async up() {
    for (const sql of eventTablesUpgradeSql) this.addSql(sql);
  }
}

/**
 * Group commit: post_transfers applies a whole batch of transfers in one call, each with its
 * own outcome, and replaces post_transfer. Every movement of money goes through it: RPC
 * transfers (batched), holds, and the host-credit consumer, so the lock order below is the
 * only one there is.
 */
class GroupCommit extends Migration {
  override async up() {
    // The event a transfer carried for its caller (GiftSent …), so the ledger can say what it
    // took for that event; and who asked for each movement.
    this.addSql("alter table transfers add column carried_event_id uuid");
    this.addSql("alter table transfers add column requested_by text not null default ''");
    this.addSql(
      "create unique index transfers_carried_event on transfers (carried_event_id) where carried_event_id is not null",
    );
    // System debits have no single balance to report (their rows are shards).
    this.addSql("alter table transfers alter column debit_balance drop not null");
    this.addSql("alter table transfers alter column idempotency_key set not null");
    this.addSql("alter table transfers alter column request_hash set not null");
    // Holds are idempotent through their reserve transfer (one mechanism for every write).
    this.addSql("alter table holds alter column idempotency_key drop not null");
    this.addSql("alter table holds alter column request_hash drop not null");
    // Each gift debit is credited at most once: the key is the debit, not the event.
    this.addSql(`create table gift_settlements (
      gift_transfer_id uuid primary key,
      host_id text not null,
      amount bigint not null check (amount > 0),
      host_amount bigint not null check (host_amount >= 0),
      platform_amount bigint not null check (platform_amount >= 0),
      settled_at timestamptz not null default now(),
      check (host_amount + platform_amount = amount))`);
    this.addSql(postTransfersFunction("create"));
    this.addSql("drop function post_transfer");
    this.addSql("drop function add_to_system_account");
  }
}

/**
 * post_transfers(batch, shards) applies the transfers of a JSON array in order and returns one
 * row per transfer: committed, replayed (its idempotency key was used before with the same
 * request hash), conflict (same key, another request), insufficient (a user account would go
 * below zero) or unknown_asset. A refusal changes nothing and never fails its neighbours.
 *
 * Locks, in the one order every transaction that moves money takes them:
 *   1. advisory locks on the idempotency keys, sorted (copies of one request queue here);
 *   2. rows of accounts credited for the first time are inserted, sorted;
 *   3. every account row the batch touches is locked, sorted by (owner, asset, shard).
 * System accounts are spread over shard rows; a batch uses one shard per account, picked at
 * random, so it touches each system account once. The user_balance_not_negative constraint
 * still guards every user row.
 */
const postTransfersFunction = (createOrReplace: "create" | "create or replace") => `
${createOrReplace} function post_transfers(p_batch jsonb, p_system_shards int)
returns table (idx int, outcome text, transfer_id uuid, debit_balance bigint, created_at timestamptz)
language plpgsql
set search_path from current
as $$
#variable_conflict use_column
declare
  v_n int := jsonb_array_length(p_batch);
  v_item jsonb;
  v_key text;
  v_asset text;
  v_debit text;
  v_credit text;
  v_amount bigint;
  v_pos int;
  v_assets text[];
  v_row record;
  v_locked bigint;
  -- One entry per transfer, in batch order.
  r_outcome text[] := array_fill(null::text, array[v_n]);
  r_id uuid[] := array_fill(null::uuid, array[v_n]);
  r_balance bigint[] := array_fill(null::bigint, array[v_n]);
  r_created timestamptz[] := array_fill(null::timestamptz, array[v_n]);
  -- Idempotency records: earlier transactions', then this batch's as it goes.
  k_key text[];
  k_hash text[];
  k_id uuid[];
  k_balance bigint[];
  k_created timestamptz[];
  -- User accounts ("owner|asset") and their balances as the batch moves them.
  u_key text[] := '{}';
  u_owner text[] := '{}';
  u_asset text[] := '{}';
  u_balance bigint[] := '{}';
  u_start bigint[] := '{}';
  -- System accounts: the shard this batch uses and the net change.
  s_key text[] := '{}';
  s_owner text[] := '{}';
  s_asset text[] := '{}';
  s_shard int[] := '{}';
  s_delta bigint[] := '{}';
begin
  if v_n = 0 then
    return;
  end if;
  perform pg_advisory_xact_lock(h) from (
    select distinct hashtextextended(e ->> 'key', 0) as h from jsonb_array_elements(p_batch) e order by 1) keys;

  select coalesce(array_agg(t.idempotency_key), '{}'), coalesce(array_agg(encode(t.request_hash, 'hex')), '{}'),
         coalesce(array_agg(t.id), '{}'), coalesce(array_agg(t.debit_balance), '{}'),
         coalesce(array_agg(t.created_at), '{}')
  into k_key, k_hash, k_id, k_balance, k_created
  from transfers t
  where t.idempotency_key = any(array(select e ->> 'key' from jsonb_array_elements(p_batch) e));

  select coalesce(array_agg(a.code), '{}') into v_assets from assets a
  where a.code in (select e ->> 'asset' from jsonb_array_elements(p_batch) e);

  -- One shard per system account for this batch.
  select coalesce(array_agg(owner || '|' || asset), '{}'), coalesce(array_agg(owner), '{}'),
         coalesce(array_agg(asset), '{}'), coalesce(array_agg(floor(random() * p_system_shards)::int), '{}'),
         coalesce(array_agg(0::bigint), '{}')
  into s_key, s_owner, s_asset, s_shard, s_delta
  from (select distinct o.owner, e ->> 'asset' as asset
        from jsonb_array_elements(p_batch) e, lateral (values (e ->> 'debit'), (e ->> 'credit')) o(owner)
        where o.owner like 'system:%' and e ->> 'asset' = any(v_assets)) s;

  -- (2) Accounts that do not exist yet: credited users and system shards, sorted.
  insert into accounts (owner, asset, shard, balance)
  select owner, asset, shard, 0 from (
    select e ->> 'credit' as owner, e ->> 'asset' as asset, 0 as shard
    from jsonb_array_elements(p_batch) e
    where e ->> 'credit' like 'user:%' and e ->> 'asset' = any(v_assets)
    union
    select * from unnest(s_owner, s_asset, s_shard)) missing
  order by owner, asset, shard
  on conflict (owner, asset, shard) do nothing;

  -- (3) Every row the batch touches, locked in order, one primary-key lookup each (a join here
  -- can turn into a scan per row when the table grew since its statistics); user balances read.
  for v_row in
    select w.owner, w.asset, w.shard from (
      select o.owner, e ->> 'asset' as asset, 0 as shard
      from jsonb_array_elements(p_batch) e, lateral (values (e ->> 'debit'), (e ->> 'credit')) o(owner)
      where o.owner like 'user:%' and e ->> 'asset' = any(v_assets)
      union
      select * from unnest(s_owner, s_asset, s_shard)) w
    order by w.owner, w.asset, w.shard
  loop
    select a.balance into v_locked from accounts a
    where a.owner = v_row.owner and a.asset = v_row.asset and a.shard = v_row.shard
    for update;
    if found and v_row.owner like 'user:%' then
      u_key := u_key || (v_row.owner || '|' || v_row.asset);
      u_owner := u_owner || v_row.owner;
      u_asset := u_asset || v_row.asset;
      u_balance := u_balance || v_locked;
      u_start := u_start || v_locked;
    end if;
  end loop;

  for v_i in 1..v_n loop
    v_item := p_batch -> (v_i - 1);
    v_key := v_item ->> 'key';
    v_pos := array_position(k_key, v_key);
    if v_pos is not null then
      if k_hash[v_pos] = v_item ->> 'hash' then
        r_outcome[v_i] := 'replayed';
        r_id[v_i] := k_id[v_pos];
        r_balance[v_i] := k_balance[v_pos];
        r_created[v_i] := k_created[v_pos];
      else
        r_outcome[v_i] := 'conflict';
      end if;
      continue;
    end if;
    v_asset := v_item ->> 'asset';
    if not (v_asset = any(v_assets)) then
      r_outcome[v_i] := 'unknown_asset';
      continue;
    end if;
    v_debit := v_item ->> 'debit';
    v_credit := v_item ->> 'credit';
    v_amount := (v_item ->> 'amount')::bigint;
    if v_debit like 'user:%' then
      v_pos := array_position(u_key, v_debit || '|' || v_asset);
      if v_pos is null or u_balance[v_pos] < v_amount then
        r_outcome[v_i] := 'insufficient';
        continue;
      end if;
      u_balance[v_pos] := u_balance[v_pos] - v_amount;
      r_balance[v_i] := u_balance[v_pos];
    else
      v_pos := array_position(s_key, v_debit || '|' || v_asset);
      s_delta[v_pos] := s_delta[v_pos] - v_amount;
    end if;
    if v_credit like 'user:%' then
      v_pos := array_position(u_key, v_credit || '|' || v_asset);
      u_balance[v_pos] := u_balance[v_pos] + v_amount;
    else
      v_pos := array_position(s_key, v_credit || '|' || v_asset);
      s_delta[v_pos] := s_delta[v_pos] + v_amount;
    end if;
    r_outcome[v_i] := 'committed';
    r_id[v_i] := (v_item ->> 'id')::uuid;
    r_created[v_i] := (v_item ->> 'created_at')::timestamptz;
    k_key := k_key || v_key;
    k_hash := k_hash || (v_item ->> 'hash');
    k_id := k_id || r_id[v_i];
    k_balance := k_balance || r_balance[v_i];
    k_created := k_created || r_created[v_i];
  end loop;

  update accounts a set balance = x.balance, updated_at = now()
  from unnest(u_owner, u_asset, u_balance, u_start) x(owner, asset, balance, start)
  where a.owner = x.owner and a.asset = x.asset and a.shard = 0 and x.balance <> x.start;
  update accounts a set balance = a.balance + x.delta, updated_at = now()
  from unnest(s_owner, s_asset, s_shard, s_delta) x(owner, asset, shard, delta)
  where a.owner = x.owner and a.asset = x.asset and a.shard = x.shard and x.delta <> 0;

  insert into transfers (id, debit_owner, credit_owner, asset, amount, kind, reference, metadata, hold_id,
                         debit_balance, idempotency_key, request_hash, created_at, carried_event_id, requested_by)
  select (i.e ->> 'id')::uuid, i.e ->> 'debit', i.e ->> 'credit', i.e ->> 'asset', (i.e ->> 'amount')::bigint,
         (i.e ->> 'kind')::smallint, coalesce(i.e ->> 'reference', ''), coalesce(i.e -> 'metadata', '{}'),
         (i.e ->> 'hold_id')::uuid, r.balance, i.e ->> 'key', decode(i.e ->> 'hash', 'hex'),
         (i.e ->> 'created_at')::timestamptz, (i.e ->> 'carried_event_id')::uuid, coalesce(i.e ->> 'requested_by', '')
  from jsonb_array_elements(p_batch) with ordinality as i(e, n)
  join unnest(r_outcome, r_balance) with ordinality as r(outcome, balance, n) using (n)
  where r.outcome = 'committed';

  perform outbox_enqueue(coalesce(jsonb_agg(ev), '[]'::jsonb))
  from jsonb_array_elements(p_batch) with ordinality as i(e, n),
       jsonb_array_elements(coalesce(i.e -> 'events', '[]'::jsonb)) ev
  where r_outcome[i.n::int] = 'committed';

  return query
  select r.n::int, r.outcome, r.id, r.balance, r.created
  from unnest(r_outcome, r_id, r_balance, r_created) with ordinality as r(outcome, id, balance, created, n);
end
$$`;

/**
 * post_transfers looks up idempotency keys with = any(array(…)) and locks account rows one
 * primary-key lookup at a time: its first version joined them, and with the statistics of a
 * table that grew since (a young service's) the planner scanned the whole table per row.
 */
class StatisticsProofLookups extends Migration {
  override async up() {
    this.addSql(postTransfersFunction("create or replace"));
  }
}

/**
 * The facts that movements without a sender's consent rest on (docs/decisions/0022): every
 * PURCHASE is one verified card payment, every REFUND one captured hold, every PROMOTION one
 * credit of a budget an admin funded. Each row is written in the transaction of its transfer,
 * and the audit matches every such transfer to its fact.
 */
class MoneyFacts extends Migration {
  override async up() {
    // A card payment mints once: the charge id is the key, whatever event or order names it.
    this.addSql(`create table card_payments (
      charge_id uuid primary key,
      reference text not null,
      customer_id text not null,
      asset text not null,
      paid bigint not null check (paid > 0),
      coins bigint not null check (coins > 0),
      transfer_id uuid not null unique,
      created_at timestamptz not null default now())`);
    // A captured hold is refunded at most once, at most its capture, to its owner.
    this.addSql("alter table holds add column refunded_amount bigint not null default 0");
    this.addSql("alter table holds add column refund_transfer_id uuid");
    this.addSql(
      "alter table holds add constraint holds_refund_within_capture check (refunded_amount >= 0 and refunded_amount <= captured_amount)",
    );
    // A promotion budget: credits of exactly unit_amount, never more spent than funded.
    this.addSql(`create table promotion_budgets (
      budget_id text primary key,
      asset text not null references assets (code),
      unit_amount bigint not null check (unit_amount > 0),
      credits_funded bigint not null check (credits_funded >= 0),
      credits_spent bigint not null default 0,
      created_at timestamptz not null default now(),
      constraint promotion_budget_not_overspent check (credits_spent >= 0 and credits_spent <= credits_funded))`);
    this.addSql(`create table promotion_fundings (
      transfer_id uuid primary key,
      budget_id text not null references promotion_budgets (budget_id),
      credits bigint not null check (credits > 0),
      funded_by text not null,
      created_at timestamptz not null default now())`);
    this.addSql(`create table promotion_credits (
      credit_id text primary key,
      budget_id text not null references promotion_budgets (budget_id),
      transfer_id uuid not null unique,
      created_at timestamptz not null default now())`);
  }
}

export const walletMigrations = [
  { name: "0001_ledger", class: Ledger },
  { name: "0002_event_headers", class: EventHeaders },
  { name: "0003_events_upgrade", class: EventsUpgrade },
  { name: "0004_group_commit", class: GroupCommit },
  { name: "0005_statistics_proof_lookups", class: StatisticsProofLookups },
  { name: "0006_money_facts", class: MoneyFacts },
];
