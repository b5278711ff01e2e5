// Wallet schema: tables, types and indexes. The ledger's write path is one SQL function,
// post_transfers, in its own file (sql/post_transfers.sql, applied by openDatabase after these
// migrations whenever the file changes): a batch of transfers is one round trip and one
// transaction, and each transfer's idempotency check, debit, credit, journal row and outbox
// rows commit together or not at all.
//
// Function bodies are no longer kept here. The earlier versions of this history (0001, 0002,
// 0004, 0005) created post_transfer, add_to_system_account and post_transfers; they no longer
// do, so a fresh database never holds a dead function, and a database that ran them has them
// dropped (0004, 0007) in the start-up transaction that creates the current ones.
import { Migration, withFunctions } from "@ovation/db";
import { eventFunctionFiles, eventTablesSql, eventTablesUpgradeSql } from "@ovation/events";

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
  }
}

/**
 * Events kept their headers (trace context) through post_transfer's outbox insert: this step
 * replaced that dead function's body and does nothing now. It stays so that the history's names
 * match every database's.
 */
class EventHeaders extends Migration {
  override async up() {}
}

/** Outbox rows that can fail on their own, attempts per consumer failure (packages/events). */
class EventsUpgrade extends Migration {
  override async up() {
    for (const sql of eventTablesUpgradeSql) this.addSql(sql);
  }
}

/**
 * Group commit: post_transfers (sql/post_transfers.sql) applies a whole batch of transfers in
 * one call, each with its own outcome, and replaces post_transfer. Every movement of money goes
 * through it: RPC transfers (batched), holds, and the host-credit consumer, so its lock order
 * is the only one there is.
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
    // Dead since this step; only a database that ran the old 0001/0002 has them.
    this.addSql(
      "drop function if exists post_transfer(uuid, text, text, text, bigint, smallint, text, jsonb, uuid, text, bytea, timestamptz, jsonb, int)",
    );
    this.addSql("drop function if exists add_to_system_account(text, text, bigint, int)");
  }
}

/**
 * post_transfers looks up idempotency keys with = any(array(…)) and locks account rows one
 * primary-key lookup at a time: its first version joined them, and with the statistics of a
 * table that grew since (a young service's) the planner scanned the whole table per row. This
 * step replaced the function's body and does nothing now (the lesson lives in
 * sql/post_transfers.sql); it stays so that the history's names match every database's.
 */
class StatisticsProofLookups extends Migration {
  override async up() {}
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

/**
 * post_transfers takes and returns records (sql/post_transfers.sql): the request and outcome
 * types, and the account balances it moves. Its earlier version returned a table of its own
 * columns, and a function's return type cannot be replaced in place, so it is dropped here and
 * created from its file in the same start-up transaction.
 */
class FunctionsInFiles extends Migration {
  override async up() {
    this.addSql("drop function if exists post_transfers(jsonb, int)");
    // One requested transfer, as the wallet sends it (ledger-store.ts batchJson).
    this.addSql(`create type transfer_request as (
      id uuid,
      debit text,
      credit text,
      asset text,
      amount bigint,
      kind smallint,
      reference text,
      metadata jsonb,
      hold_id uuid,
      key text,
      hash text,
      created_at timestamptz,
      carried_event_id uuid,
      requested_by text,
      events jsonb)`);
    // What became of a request: idx is its 1-based position in the batch; outcome one of
    // committed, replayed, conflict, insufficient, unknown_asset, duplicate_event.
    this.addSql(`create type transfer_outcome as (
      idx int,
      outcome text,
      transfer_id uuid,
      debit_balance bigint,
      created_at timestamptz)`);
    // An account row a batch touches, with its balance as the batch moves it.
    this.addSql(`create type account_balance as (
      owner text,
      asset text,
      shard smallint,
      balance bigint)`);
  }
}

export const walletMigrations = withFunctions(
  [
    { name: "0001_ledger", class: Ledger },
    { name: "0002_event_headers", class: EventHeaders },
    { name: "0003_events_upgrade", class: EventsUpgrade },
    { name: "0004_group_commit", class: GroupCommit },
    { name: "0005_statistics_proof_lookups", class: StatisticsProofLookups },
    { name: "0006_money_facts", class: MoneyFacts },
    { name: "0007_functions_in_files", class: FunctionsInFiles },
  ],
  [...eventFunctionFiles, new URL("./sql/post_transfers.sql", import.meta.url)],
);
