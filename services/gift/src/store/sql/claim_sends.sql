-- claim_sends(p_items jsonb, p_window_ms int) returns one row per item
--
-- Group commit of claims (docs/decisions/0004): claim_send for each item of a JSON array, in
-- array order, in one transaction and one commit.
--
-- Inputs
--   p_items      a JSON array of objects: id, sender, key, room, gift, count, now, gift_name,
--                unit_price, pk_points, animation_key, vip_level (claim_send's inputs, named as
--                gift-store.ts ClaimItem sends them)
--   p_window_ms  the combo window
--
-- Output: claim_send's row for each item with idx, its 1-based position, first; in item order.
--
-- Invariants: as claim_send's, per item; items of the same combo or key take their steps in
-- array order. Refusals are per item (claim_send's outcomes) and never fail the others.
create or replace function claim_sends(p_items jsonb, p_window_ms int)
returns table (idx int, outcome text, id uuid, combo int, created_at timestamptz, room_id uuid,
  gift_id text, count int, host_id text, gift_name text, unit_price bigint, pk_points bigint,
  animation_key text, sender_vip_level int, event bytea)
language sql
set search_path from current
as $$
  select i.n::int, c.*
  from jsonb_array_elements(p_items) with ordinality as i(e, n)
  cross join lateral claim_send((i.e ->> 'id')::uuid, i.e ->> 'sender', i.e ->> 'key', (i.e ->> 'room')::uuid,
    i.e ->> 'gift', (i.e ->> 'count')::int, (i.e ->> 'now')::timestamptz, p_window_ms, i.e ->> 'gift_name',
    (i.e ->> 'unit_price')::bigint, (i.e ->> 'pk_points')::bigint, i.e ->> 'animation_key',
    (i.e ->> 'vip_level')::int) c
  order by i.n
$$;
