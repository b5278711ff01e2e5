-- inventory_finish(p_orders jsonb, p_state smallint)
--   returns void
--
-- Closes the reservations of a batch of orders (one inventory-release or inventory-commit
-- consumer batch; p_orders is a JSON array of order ids) in one round trip: p_state 2
-- (released) puts each order's reserved units back on sale, 3 (committed) marks them sold. Each order is moved once: a reservation already
-- released or committed is left alone. Every order is recorded as closed, reservation or not,
-- so a reservation that arrives later (events can come out of order) takes nothing.
--
-- Locks in the order inventory_reserve takes them (every order's advisory lock in order id
-- order, then the stock rows in product id order), so concurrent batches never deadlock.
create or replace function inventory_finish(p_orders jsonb, p_state smallint)
returns void
language plpgsql
set search_path from current
-- Key lookups only: keep the index however small a table was when the session planned them
-- (post_transfers.sql, decision 0053).
set enable_seqscan to off
as $$
declare
  v_lock text;
  v_ids uuid[] := array(select jsonb_array_elements_text(p_orders)::uuid);
begin
  if p_state not in (2, 3) then
    raise exception 'inventory_finish: state % is neither released (2) nor committed (3)', p_state
      using errcode = '22023';
  end if;
  for v_lock in select distinct jsonb_array_elements_text(p_orders) order by 1 loop
    perform pg_advisory_xact_lock(hashtextextended('inventory-order:' || v_lock, 0));
  end loop;
  perform 1 from inventory_stock s
  where s.product_id in (
    select r.product_id from inventory_reservations r where r.order_id = any (v_ids) and r.state = 1)
  order by s.product_id
  for update;

  with held as (
    update inventory_reservations r set state = p_state
    where r.order_id = any (v_ids) and r.state = 1
    returning r.product_id, r.quantity),
  per_product as (
    select product_id, sum(quantity)::bigint as quantity from held group by product_id)
  update inventory_stock s
  set available = s.available + case when p_state = 2 then p.quantity else 0 end,
      sold = s.sold + case when p_state = 3 then p.quantity else 0 end,
      reserved = s.reserved - p.quantity
  from per_product p
  where s.product_id = p.product_id;

  insert into inventory_closed_orders (order_id, outcome, closed_at)
  select distinct id, p_state, now() from unnest(v_ids) id
  on conflict do nothing;
end
$$;
