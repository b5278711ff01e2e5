// Wallet schema. The ledger's write path is one SQL function, post_transfer, so a transfer is
// one round trip and one implicit transaction: idempotency check, debit, credit, journal row
// and outbox rows commit together or not at all.
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

export const walletMigrations = [
  { name: "0001_ledger", class: Ledger },
  { name: "0002_event_headers", class: EventHeaders },
  { name: "0003_events_upgrade", class: EventsUpgrade },
];
