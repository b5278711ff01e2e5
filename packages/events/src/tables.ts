// The tables every service with events needs, created by one migration step in each service:
// the outbox (events waiting to be published), the inbox (event ids a consumer has processed,
// written in the same transaction as the effect) and consumer failures (attempts and the last
// error per message, so a message that keeps failing is dead-lettered with its reason).
//
// `eventTablesSql` is the current schema for a new service; services created before a change
// run `eventTablesUpgradeSql` in a later migration. Every upgrade statement is idempotent, so
// on a schema created from the current `eventTablesSql` it changes nothing.

/** Functions, created or replaced by both the first migration and every upgrade. */
const eventFunctionsSql = [
  // Wakes the relay through LISTEN/NOTIFY. NOTIFY serialises committing transactions on a
  // database-wide lock, so it is sent only when no older row is waiting to be claimed: under
  // load the relay is already draining and its short poll covers the rare race. Rows leased
  // by a relay or backing off after a failure do not count as waiting.
  `create or replace function outbox_wake(new_id bigint) returns void language sql set search_path from current as $$
     select pg_notify(current_schema() || '_outbox', '')
     where not exists (select 1 from outbox where id < new_id and available_at <= now())
   $$`,
  // The one way events enter an outbox, from TypeScript (enqueueEvents) and from SQL functions
  // (the wallet's post_transfers) alike: rows from a JSON array, then the wake-up.
  `create or replace function outbox_enqueue(p_events jsonb) returns void language plpgsql
   set search_path from current as $$
   declare
     v_first bigint;
   begin
     with inserted as (
       insert into outbox (event_id, subject, type, payload, headers)
       select (e ->> 'event_id')::uuid, e ->> 'subject', e ->> 'type', decode(e ->> 'payload', 'base64'),
              coalesce(e -> 'headers', '{}')
       from jsonb_array_elements(p_events) e
       returning id)
     select min(id) into v_first from inserted;
     if v_first is not null then
       perform outbox_wake(v_first);
     end if;
   end
   $$`,
];

export const eventTablesSql = [
  `create table outbox (
     id bigint generated always as identity primary key,
     event_id uuid not null,
     subject text not null,
     type text not null,
     payload bytea not null,
     headers jsonb not null default '{}',
     created_at timestamptz not null default now(),
     attempts int not null default 0,
     last_error text,
     available_at timestamptz not null default now())`,
  `create table inbox (
     consumer text not null,
     event_id uuid not null,
     processed_at timestamptz not null default now(),
     primary key (consumer, event_id))`,
  `create index inbox_processed_at on inbox (processed_at)`,
  `create table consumer_failures (
     consumer text not null,
     stream_sequence bigint not null,
     deliveries int not null,
     attempts int not null default 0,
     reason text not null,
     failed_at timestamptz not null default now(),
     primary key (consumer, stream_sequence))`,
  ...eventFunctionsSql,
];

/** Brings the event tables of a service created before the current schema up to date. */
export const eventTablesUpgradeSql = [
  "alter table outbox add column if not exists attempts int not null default 0",
  "alter table outbox add column if not exists last_error text",
  "alter table outbox add column if not exists available_at timestamptz not null default now()",
  "alter table consumer_failures add column if not exists attempts int not null default 0",
  ...eventFunctionsSql,
];
