// The tables every service with events needs, created by one migration step in each service:
// the outbox (events waiting to be published), the inbox (event ids a consumer has processed,
// written in the same transaction as the effect) and consumer failures (attempts and the last
// error per message, so a message that keeps failing is dead-lettered with its reason).
//
// `eventTablesSql` is the current schema for a new service; services created before a change
// run `eventTablesUpgradeSql` in a later migration. Every upgrade statement is idempotent, so
// on a schema created from the current `eventTablesSql` it changes nothing. The tables' function
// (`outbox_enqueue`) is a function file (sql/), applied at start-up like a service's own (0023,
// 0051), so a change to it reaches every database without a migration.

/**
 * The events' SQL function files, applied at start-up by every schema with an outbox (before its
 * own files, which may call them): `withFunctions(migrations, [...eventFunctionFiles, …])`.
 */
export const eventFunctionFiles: readonly URL[] = [new URL("./sql/outbox_enqueue.sql", import.meta.url)];

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
];

/** Brings the event tables of a service created before the current schema up to date. */
export const eventTablesUpgradeSql = [
  "alter table outbox add column if not exists attempts int not null default 0",
  "alter table outbox add column if not exists last_error text",
  "alter table outbox add column if not exists available_at timestamptz not null default now()",
  "alter table consumer_failures add column if not exists attempts int not null default 0",
];
