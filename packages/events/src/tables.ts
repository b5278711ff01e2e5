// The tables every service with events needs, created by one migration step in each service:
// the outbox (events waiting to be published), the inbox (event ids a consumer has processed,
// written in the same transaction as the effect) and consumer failures (the last error per
// message, so a dead letter carries its reason).
export const eventTablesSql = [
  `create table outbox (
     id bigint generated always as identity primary key,
     event_id uuid not null,
     subject text not null,
     type text not null,
     payload bytea not null,
     headers jsonb not null default '{}',
     created_at timestamptz not null default now())`,
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
     reason text not null,
     failed_at timestamptz not null default now(),
     primary key (consumer, stream_sequence))`,
  // Wakes the relay through LISTEN/NOTIFY. NOTIFY serialises committing transactions on a
  // database-wide lock, so it is sent only when the outbox held nothing older: under load the
  // relay is already draining and polling covers the rare race.
  `create function outbox_wake(new_id bigint) returns void language sql set search_path from current as $$
     select pg_notify(current_schema() || '_outbox', '')
     where not exists (select 1 from outbox where id < new_id)
   $$`,
];
