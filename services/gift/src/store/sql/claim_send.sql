-- claim_send(p_id, p_sender, p_key, p_room, p_gift, p_count, p_now, p_window_ms, p_gift_name,
--            p_unit_price, p_pk_points, p_animation_key, p_vip_level) returns one row
--
-- Records a send before any money moves (docs/decisions/0004): the idempotency record of
-- SendGift, the authoritative "room is live" check, and the combo step, in one call.
--
-- Inputs
--   p_id            the new send's id (also the GiftSent event id), used only for a new claim
--   p_sender, p_key the sender and their idempotency key: the send's identity
--   p_room, p_gift, p_count  what is sent (count 1..9999)
--   p_now           the claim time; p_window_ms the combo window (GIFT_COMBO_WINDOW_MS)
--   p_gift_name, p_unit_price, p_pk_points, p_animation_key, p_vip_level  the catalog entry and
--                   the sender's VIP level as the caller saw them: stored with the claim, so a
--                   retry rebuilds exactly the first attempt's GiftSent payload
--
-- Output: one row; outcome is
--   claimed         a new send: its id, combo step, time and stored fields (event is null: the
--                   caller builds the payload and stores it);
--   existing        the same key with the same room, gift and count before: that first claim,
--                   whatever happened to the room or the catalog since;
--   conflict        the same key with another room, gift or count (the first claim's fields);
--   room_not_found, room_not_live, self_gift  refusals, every other column null.
--
-- Invariants
--   - One send per (sender, key) (sends unique constraint); a concurrent claim of the same key
--     that loses the insert answers with the winner's claim.
--   - The combo row of (sender, room, gift) is created if missing, then locked, so concurrent
--     sends of it take their steps one after another (1, 2, 3, …): a send within p_window_ms of
--     the previous one, or stamped just before it (it waited for the lock), continues the
--     streak; any other starts again at 1. last_at never moves back.
--   - A refusal writes nothing.
create or replace function claim_send(
  p_id uuid, p_sender text, p_key text, p_room uuid, p_gift text, p_count int, p_now timestamptz,
  p_window_ms int, p_gift_name text, p_unit_price bigint, p_pk_points bigint, p_animation_key text,
  p_vip_level int)
returns table (outcome text, id uuid, combo int, created_at timestamptz, room_id uuid, gift_id text,
  count int, host_id text, gift_name text, unit_price bigint, pk_points bigint, animation_key text,
  sender_vip_level int, event bytea)
language plpgsql
set search_path from current
as $$
#variable_conflict use_column
declare
  v_host text;
  v_status smallint;
  v_streak int;
  v_last timestamptz;
  v_combo int;
begin
  -- An earlier claim of the key answers first, whatever the room's state now.
  return query select case when s.room_id = p_room and s.gift_id = p_gift and s.count = p_count
                           then 'existing' else 'conflict' end,
                      s.id, s.combo, s.created_at, s.room_id, s.gift_id, s.count, s.host_id, s.gift_name,
                      s.unit_price, s.pk_points, s.animation_key, s.sender_vip_level, s.event
               from sends s where s.sender_id = p_sender and s.idempotency_key = p_key;
  if found then
    return;
  end if;

  select r.host_id, r.status into v_host, v_status from rooms r where r.id = p_room;
  if not found or v_status <> 1 then
    return query select case when v_status is null then 'room_not_found' else 'room_not_live' end,
                        null::uuid, null::int, null::timestamptz, null::uuid, null::text,
                        null::int, null::text, null::text, null::bigint, null::bigint, null::text, null::int, null::bytea;
    return;
  end if;
  if v_host = p_sender then
    return query select 'self_gift', null::uuid, null::int, null::timestamptz, null::uuid, null::text,
                        null::int, null::text, null::text, null::bigint, null::bigint, null::text, null::int, null::bytea;
    return;
  end if;

  insert into sends (id, sender_id, idempotency_key, room_id, gift_id, count, combo, created_at, host_id,
                     gift_name, unit_price, pk_points, animation_key, sender_vip_level)
  values (p_id, p_sender, p_key, p_room, p_gift, p_count, 1, p_now, v_host, p_gift_name, p_unit_price,
          p_pk_points, p_animation_key, p_vip_level)
  on conflict (sender_id, idempotency_key) do nothing;
  if not found then
    -- A concurrent claim with the same key won: answer with it.
    return query select * from claim_send(p_id, p_sender, p_key, p_room, p_gift, p_count, p_now, p_window_ms,
                                          p_gift_name, p_unit_price, p_pk_points, p_animation_key, p_vip_level);
    return;
  end if;

  -- The combo step, under the streak row's lock.
  insert into combos (sender_id, room_id, gift_id, streak, last_at) values (p_sender, p_room, p_gift, 0, 'epoch')
  on conflict do nothing;
  select c.streak, c.last_at into v_streak, v_last from combos c
  where c.sender_id = p_sender and c.room_id = p_room and c.gift_id = p_gift for update;
  v_combo := case when p_now - v_last <= make_interval(secs => p_window_ms / 1000.0) then v_streak + 1 else 1 end;
  update combos c set streak = v_combo, last_at = greatest(c.last_at, p_now)
  where c.sender_id = p_sender and c.room_id = p_room and c.gift_id = p_gift;
  update sends s set combo = v_combo where s.id = p_id;
  return query select 'claimed', p_id, v_combo, p_now, p_room, p_gift, p_count, v_host, p_gift_name, p_unit_price,
                      p_pk_points, p_animation_key, p_vip_level, null::bytea;
end
$$;
