-- count_window(p_battle uuid) returns void
--
-- After a tie extended a battle's window (a bonus round: ends_at moved later), counts the gifts
-- the battle kept uncounted that the window now holds (docs/decisions/0015).
--
-- Inputs: p_battle, a battle the caller has locked (settlement's transaction, bonusRound).
-- Output: none; the totals change.
--
-- Invariants
--   - Only gifts recorded uncounted and not late, committed before the new ends_at and before
--     their host forfeited, become counted; each once (counted is set in the same statement).
--   - score_a/score_b, host points and supporter points grow by exactly the newly counted
--     points, so they stay the sums of the counted battle_gifts.
--   - scored_at is stamped so that the live score publication sees the change.
--
-- Refusals: none; an unknown battle changes nothing.
create or replace function count_window(p_battle uuid)
returns void
language plpgsql
set search_path from current
as $$
declare
  v_ends timestamptz;
begin
  select ends_at into v_ends from battles where id = p_battle;
  with newly as (
    update battle_gifts g set counted = true
    from battle_hosts h
    where g.battle_id = p_battle and not g.counted and not g.late and g.committed_at < v_ends
      and h.battle_id = g.battle_id and h.host_id = g.host_id
      and (h.forfeited_at is null or g.committed_at < h.forfeited_at)
    returning g.*),
  battle as (
    update battles b set score_a = b.score_a + coalesce((select sum(points) from newly where side = 1), 0),
                         score_b = b.score_b + coalesce((select sum(points) from newly where side = 2), 0),
                         scored_at = clock_timestamp()
    where b.id = p_battle returning b.id),
  hosts as (
    update battle_hosts h set points = h.points + s.points
    from (select host_id, sum(points) as points from newly group by host_id) s
    where h.battle_id = p_battle and h.host_id = s.host_id returning h.host_id)
  insert into battle_supporters as s (battle_id, side, user_id, points)
  select p_battle, side, sender_id, sum(points) from newly group by side, sender_id
  on conflict (battle_id, side, user_id) do update set points = s.points + excluded.points;
end
$$;
