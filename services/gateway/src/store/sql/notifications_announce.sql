-- notifications_announce() returns trigger, and the trigger that runs it
--
-- Announces every new notification to the gateway replicas (docs/decisions/0020): after each
-- insert into notifications, a NOTIFY on "<schema>_notifications" (store/migrations.ts
-- notificationChannel) whose payload is the row as the user channel shows it, plus the user
-- it is for: {userId, id, type, text, data, createTime (UTC, milliseconds, RFC 3339)}.
--
-- Inputs: the inserted row (NEW). Output: none (an AFTER trigger's result is ignored).
--
-- Invariants
--   - A NOTIFY is delivered only when the inserting transaction commits, once to each
--     LISTENing session: every replica hears each committed notification once, and never one
--     that rolled back.
--   - The payload stays under the 8,000 bytes Postgres allows: the notifications table's check
--     constraints bound user_id, text and data (domain/notifications.ts notificationLimits).
--
-- Refusals: none. A payload over the limit would fail the insert at commit; the table's bounds
-- keep that from happening.
--
-- The trigger lives here with its function: on a new database the migrations run first, and a
-- trigger cannot name a function that does not exist yet.
create or replace function notifications_announce()
returns trigger
language plpgsql
set search_path from current
as $$
begin
  perform pg_notify(current_schema() || '_notifications', json_build_object(
    'userId', new.user_id, 'id', new.id, 'type', new.type, 'text', new.text, 'data', new.data,
    'createTime', to_char(new.created_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'))::text);
  return null;
end
$$;

create or replace trigger notifications_announce after insert on notifications
  for each row execute function notifications_announce();
