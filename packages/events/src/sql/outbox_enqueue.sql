-- outbox_enqueue(p_events jsonb) returns void
--
-- The one way events enter an outbox, from TypeScript (enqueueEvents) and from SQL functions
-- (the wallet's post_transfers) alike, in the caller's transaction.
--
-- Input: a JSON array of rows, in publishing order, each {event_id, subject, type, payload
-- (base64), headers (object, optional)}.
--
-- It wakes no relay. NOTIFY takes a lock of the whole database from the commit's start to its
-- end, so every committing transaction that sent one waited for the others' WAL flushes: half
-- the commits per second at 16 clients here (decision 0051). The writer wakes the relays after
-- its commit (outbox.ts, `outboxCommitted`): in memory when its process runs the schema's
-- relay, otherwise with a NOTIFY of its own, outside the transaction.
--
-- Applied to every schema with an outbox at start-up (packages/events `eventFunctionFiles`),
-- which also removes outbox_wake, the NOTIFY this function sent before.
drop function if exists outbox_wake(bigint);

create or replace function outbox_enqueue(p_events jsonb) returns void
language sql
set search_path from current
as $$
  insert into outbox (event_id, subject, type, payload, headers)
  select (e ->> 'event_id')::uuid, e ->> 'subject', e ->> 'type', decode(e ->> 'payload', 'base64'),
         coalesce(e -> 'headers', '{}')
  from jsonb_array_elements(p_events) with ordinality as x(e, n)
  order by x.n
$$;
