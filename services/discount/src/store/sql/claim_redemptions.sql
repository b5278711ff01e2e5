-- claim_redemptions(p_campaign uuid, p_requests jsonb, p_now timestamptz)
--   returns table (id uuid, outcome text, position bigint, reason text, redemption_limit bigint,
--                  redemption_id uuid, redeemed_at timestamptz)
--
-- Applies one campaign's share of a group-committed batch of redemptions
-- (docs/decisions/0017), in request order, under the campaign row's lock, with one counter
-- update for the whole batch.
--
-- Inputs
--   p_campaign  the campaign
--   p_requests  a JSON array of objects: id (the redemption's id), user_id, code_id (the
--               single-use code's id, or null for a shared code), key (the request's
--               idempotency key, scoped to the user; null or absent when it has none)
--   p_now       the redemption time, checked against the campaign's window
--
-- Output: one row per request, in request order; redemption_limit is the campaign's (0 when it
-- is unknown); redemption_id and redeemed_at are the redemption's (for redeemed and replayed).
-- outcome is
--   redeemed   a redemption row was written with the next position (1..redemption_limit);
--   replayed   the user's key already recorded a redemption of this campaign (and this code):
--              position, redemption_id and redeemed_at are that redemption's;
--   conflict   the user's key recorded a redemption of another campaign or code;
--   already    the user has per_user_limit redemptions of the campaign (reason null), or the
--              single-use code was used (reason 'code used');
--   exhausted  every position is taken;
--   inactive   reason says why: unknown campaign, not activated, paused, ended, not started,
--              expired.
--
-- Invariants
--   - A key is checked first, before the window, the status, the user's share and exhaustion:
--     a retry of a recorded redemption gets it back whatever has changed since (decision 0031).
--     Under the campaign's lock a key is recorded once per campaign (the unique index
--     redemptions_key guards it); two requests with one key in one batch get one redemption.
--   - Positions are dense and unique per campaign (1..N, a unique constraint): never more
--     redemptions than redemption_limit, under any concurrency (the campaign row's lock).
--   - A user's share is checked before exhaustion, so a winner retrying after the last slot
--     went is still told it is theirs ('already').
--   - A single-use code is marked used in the same statement that checks it.
--   - campaigns.redeemed equals the number of redemptions; it and changed_at move once per
--     batch, only when something was redeemed.
--   - A refusal writes nothing.
create or replace function claim_redemptions(p_campaign uuid, p_requests jsonb, p_now timestamptz)
returns table (id uuid, outcome text, "position" bigint, reason text, redemption_limit bigint,
               redemption_id uuid, redeemed_at timestamptz)
language plpgsql
set search_path from current
as $$
declare
  c campaigns%rowtype;
  r record;
  v_redeemed bigint;
  v_inactive text;
  v_mine int;
  v_prior record;
begin
  select * into c from campaigns where campaigns.id = p_campaign for update;
  if not found then
    return query select x.id, 'inactive', null::bigint, 'unknown campaign', 0::bigint, null::uuid,
        null::timestamptz
      from jsonb_to_recordset(p_requests) as x(id uuid);
    return;
  end if;
  v_inactive := case
    when c.status = 1 then 'the campaign has not been activated'
    when c.status = 3 then 'the campaign is paused'
    when c.status = 4 then 'the campaign has ended'
    when p_now < c.starts_at then 'the campaign has not started'
    when p_now >= c.ends_at then 'the campaign has expired'
  end;
  v_redeemed := c.redeemed;
  redemption_limit := c.redemption_limit;
  -- In request order: jsonb_to_recordset yields the array's elements in order.
  for r in select * from jsonb_to_recordset(p_requests) as x(id uuid, user_id text, code_id uuid, key text) loop
    id := r.id; "position" := null; reason := null; redemption_id := null; redeemed_at := null;
    if r.key is not null then
      -- The redemption this key recorded, this campaign's and this code's first if there is one
      -- (another campaign's can exist only if two of its claims raced under different locks).
      select d.id, d.position, d.created_at, d.campaign_id = p_campaign and d.code_id is not distinct from r.code_id as same
        into v_prior
        from redemptions d where d.user_id = r.user_id and d.idempotency_key = r.key
        order by 4 desc limit 1;
      if found and v_prior.same then
        outcome := 'replayed'; "position" := v_prior.position;
        redemption_id := v_prior.id; redeemed_at := v_prior.created_at; return next;
        continue;
      elsif found then
        outcome := 'conflict'; return next;
        continue;
      end if;
    end if;
    if v_inactive is not null then
      outcome := 'inactive'; reason := v_inactive; return next;
      continue;
    end if;
    -- A user who already has their share is told so, also once every slot is taken.
    select count(*) into v_mine from redemptions d where d.campaign_id = p_campaign and d.user_id = r.user_id;
    if v_mine >= c.per_user_limit then
      outcome := 'already'; return next;
      continue;
    end if;
    if v_redeemed >= c.redemption_limit then
      outcome := 'exhausted'; return next;
      continue;
    end if;
    if r.code_id is not null then
      update codes set redeemed_by = r.user_id, redeemed_at = p_now
        where codes.id = r.code_id and codes.campaign_id = p_campaign and redeemed_by is null;
      if not found then
        outcome := 'already'; reason := 'code used'; return next;
        continue;
      end if;
    end if;
    v_redeemed := v_redeemed + 1;
    insert into redemptions (id, campaign_id, user_id, position, code_id, created_at, idempotency_key)
      values (r.id, p_campaign, r.user_id, v_redeemed, r.code_id, p_now, r.key);
    outcome := 'redeemed'; "position" := v_redeemed; redemption_id := r.id; redeemed_at := p_now;
    return next;
  end loop;
  if v_redeemed <> c.redeemed then
    update campaigns set redeemed = v_redeemed, changed_at = clock_timestamp() where campaigns.id = p_campaign;
  end if;
end
$$;
