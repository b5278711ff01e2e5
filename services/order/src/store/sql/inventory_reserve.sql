-- inventory_reserve(p_orders jsonb)
--   returns table (order_id uuid, reserved boolean, reason text)
--
-- Reserves the limited lines of a batch of orders (one inventory-reserve consumer batch), each
-- all or nothing, in one round trip: the stock rows a batch touches are locked only from this
-- call to its commit, not across one round trip per line (docs/decisions/0047).
--
-- Inputs
--   p_orders  a JSON array of objects: order_id (text, the order's id), lines (an array of
--             objects: product_id (text), quantity (a positive integer, as a number or text))
--
-- Output: one row per order, in input order.
--   reserved true   every line is reserved (or was, by an earlier delivery; or it has none);
--   reserved false  nothing is reserved; reason says why: the order was closed (it failed
--                   before its reservation arrived), or 'only N of P left' for the first short
--                   product in product id order.
--
-- Locks, always in this order, so concurrent batches (reserve, release, commit) never deadlock:
-- every order's advisory lock 'inventory-order:<id>' (the one app/inventory.ts takes) in
-- order id order, then every stock row in product id order. A missing stock row is created
-- empty first.
create or replace function inventory_reserve(p_orders jsonb)
returns table (order_id uuid, reserved boolean, reason text)
language plpgsql
set search_path from current
-- Key lookups only: keep the index however small a table was when the session planned them
-- (post_transfers.sql, decision 0053).
set enable_seqscan to off
as $$
#variable_conflict use_column
declare
  v_lock text;
  v_order jsonb;
  v_id uuid;
  v_short text;
  v_lines jsonb;
begin
  for v_lock in select distinct o ->> 'order_id' from jsonb_array_elements(p_orders) o order by 1 loop
    perform pg_advisory_xact_lock(hashtextextended('inventory-order:' || v_lock, 0));
  end loop;

  insert into inventory_stock (product_id, available)
  select distinct l ->> 'product_id', 0
  from jsonb_array_elements(p_orders) o, jsonb_array_elements(o -> 'lines') l
  order by 1
  on conflict do nothing;
  perform 1 from inventory_stock s
  where s.product_id in (
    select l ->> 'product_id' from jsonb_array_elements(p_orders) o, jsonb_array_elements(o -> 'lines') l)
  order by s.product_id
  for update;

  for v_order in select o from jsonb_array_elements(p_orders) o loop
    v_id := (v_order ->> 'order_id')::uuid;
    if exists (select 1 from inventory_closed_orders c where c.order_id = v_id) then
      return query select v_id, false, 'the order was closed before its stock was reserved';
      continue;
    end if;
    if exists (select 1 from inventory_reservations r where r.order_id = v_id) then
      return query select v_id, true, null::text;
      continue;
    end if;
    -- The order's lines, one per product.
    select coalesce(jsonb_agg(jsonb_build_object('product_id', x.product_id, 'quantity', x.quantity)), '[]')
    into v_lines
    from (
      select l ->> 'product_id' as product_id, sum((l ->> 'quantity')::bigint) as quantity
      from jsonb_array_elements(v_order -> 'lines') l
      group by 1) x;
    select format('only %s of %s left', s.available, l.product_id) into v_short
    from jsonb_to_recordset(v_lines) as l(product_id text, quantity bigint) join inventory_stock s using (product_id)
    where s.available < l.quantity
    order by l.product_id
    limit 1;
    if v_short is not null then
      return query select v_id, false, v_short;
      continue;
    end if;
    update inventory_stock s
    set available = s.available - l.quantity, reserved = s.reserved + l.quantity
    from jsonb_to_recordset(v_lines) as l(product_id text, quantity bigint)
    where s.product_id = l.product_id;
    insert into inventory_reservations (order_id, product_id, quantity, state)
    select v_id, l.product_id, l.quantity, 1 from jsonb_to_recordset(v_lines) as l(product_id text, quantity bigint);
    return query select v_id, true, null::text;
  end loop;
end
$$;
