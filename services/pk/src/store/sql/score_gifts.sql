-- score_gifts(p_gifts jsonb) returns table (battle_id, send_id, side, points, committed_at,
--                                           counted, late)
--
-- Scores one consumer batch of gifts (docs/decisions/0015): records each gift once against
-- every battle its receiving host takes part in whose window may hold it, and adds the counted
-- ones to the side, host and supporter totals, in the consumer's transaction.
--
-- Inputs
--   p_gifts  a JSON array of gift_to_score objects (type: migration 0003): send_id, host_id (the
--            receiving host), sender_id, gift_id, pk_points (per gift, before bonuses),
--            committed_at (the ledger's commit time of the gift's debit).
--
-- Output: the battle_gifts rows this call added, one per (battle, gift) not recorded before, in
-- the order of the gifts.
--   counted  the gift counts: the battle is running (ACTIVE, BONUS_ROUND or ENDED and waiting
--            for settlement), started_at <= committed_at < ends_at, and its host had not
--            forfeited by then;
--   late     the battle was SETTLED already and its window holds the gift: reported, added to
--            late_a/late_b, never to the score;
--   neither  a running battle whose window does not hold the gift (yet): kept for a bonus round
--            that may extend the window to it (count_window).
--   points   pk_points x the highest multiplier of the bonus windows in force at committed_at
--            (for all battles or this one, all gifts or this gift), 1 when there is none.
--
-- Invariants
--   - A gift is recorded once per battle (battle_gifts primary key (battle_id, send_id)): a
--     redelivered or replayed gift adds nothing and is not returned again.
--   - Running battles of the receiving hosts are locked first, in id order: settlement and the
--     timers lock the same rows, so a gift is scored either wholly before its battle settles or
--     after it, as late. SETTLED is final, so settled battles are not locked (a host's history
--     would make every gift cost more); a late gift's UPDATE of late_a/late_b locks only the
--     battle that holds it.
--   - score_a/score_b equal the sums of the counted battle_gifts of each side, host points the
--     sums per host, supporter points the sums per sender and side.
--   - Only hosts that accepted (2) or forfeited (4) score; pending (1) and cancelled (6) battles
--     score nothing.
--
-- Refusals: none; a gift that no battle may hold is simply not recorded.
create or replace function score_gifts(p_gifts jsonb)
returns table (battle_id uuid, send_id uuid, side smallint, points bigint, committed_at timestamptz,
               counted boolean, late boolean)
language plpgsql
set search_path from current
-- Key lookups only: keep the index however small `battles` was when the session planned them
-- (a new deployment's battles grow from none; post_transfers.sql, decision 0053).
set enable_seqscan to off
as $$
#variable_conflict use_column
declare
  v_gifts gift_to_score[] := array(select jsonb_populate_recordset(null::gift_to_score, p_gifts));
  -- The battle_gifts rows this call added.
  v_added battle_gifts[];
begin
  -- The receiving hosts' running battles, locked in id order.
  perform 1 from battles b
  where b.id in (select h.battle_id from battle_hosts h where h.host_id in (select g.host_id from unnest(v_gifts) g))
    and b.state between 2 and 4
  order by b.id
  for update;

  -- Each gift against each battle of its host that may hold it: running battles it reached
  -- after their start, settled ones whose window holds it.
  with candidates as (
    select b.id as battle_id, b.state, b.ends_at, h.side, h.forfeited_at, g.*,
           coalesce((select max(w.multiplier) from bonus_windows w
                     where w.starts_at <= g.committed_at and g.committed_at < w.ends_at
                       and (w.battle_id is null or w.battle_id = b.id)
                       and (w.gift_id is null or w.gift_id = g.gift_id)), 1) as multiplier
    from unnest(v_gifts) with ordinality g
    join battle_hosts h on h.host_id = g.host_id and h.status in (2, 4)
    join battles b on b.id = h.battle_id
    where b.state between 2 and 5 and b.started_at <= g.committed_at
      and (b.state < 5 or g.committed_at < b.ends_at)),
  added as (
    insert into battle_gifts (battle_id, send_id, side, host_id, sender_id, gift_id, base_points, multiplier,
                              points, committed_at, counted, late)
    select c.battle_id, c.send_id, c.side, c.host_id, c.sender_id, c.gift_id, c.pk_points, c.multiplier,
           c.pk_points * c.multiplier, c.committed_at,
           c.state < 5 and c.committed_at < c.ends_at and (c.forfeited_at is null or c.committed_at < c.forfeited_at),
           c.state = 5
    from candidates c
    order by c.ordinality, c.battle_id
    on conflict do nothing
    returning *)
  select coalesce(array_agg(a), '{}') into v_added from added a;

  -- Battle totals: counted points to the score, late ones to the late totals.
  update battles t
  set score_a = t.score_a + s.a, score_b = t.score_b + s.b, late_a = t.late_a + s.late_a, late_b = t.late_b + s.late_b,
      scored_at = case when s.scored then clock_timestamp() else t.scored_at end
  from (select a.battle_id,
               coalesce(sum(a.points) filter (where a.counted and a.side = 1), 0) as a,
               coalesce(sum(a.points) filter (where a.counted and a.side = 2), 0) as b,
               coalesce(sum(a.points) filter (where a.late and a.side = 1), 0) as late_a,
               coalesce(sum(a.points) filter (where a.late and a.side = 2), 0) as late_b,
               bool_or(a.counted) as scored
        from unnest(v_added) a where a.counted or a.late group by a.battle_id) s
  where t.id = s.battle_id;

  -- Host points.
  update battle_hosts h set points = h.points + s.points
  from (select a.battle_id, a.host_id, sum(a.points) as points from unnest(v_added) a where a.counted
        group by a.battle_id, a.host_id) s
  where h.battle_id = s.battle_id and h.host_id = s.host_id;

  -- Supporter points, per sender and side.
  insert into battle_supporters as s (battle_id, side, user_id, points)
  select a.battle_id, a.side, a.sender_id, sum(a.points) from unnest(v_added) a where a.counted
  group by a.battle_id, a.side, a.sender_id
  on conflict (battle_id, side, user_id) do update set points = s.points + excluded.points;

  return query
  select a.battle_id, a.send_id, a.side, a.points, a.committed_at, a.counted, a.late from unnest(v_added) a;
end
$$;
