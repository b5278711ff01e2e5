// Order schema. The shop's own tables (products, carts) and the inventory module's tables
// (inventory_*): the inventory module owns stock and reaches the shop only through events and
// its own functions, so it can become its own deployable later.
import { Migration, withFunctions } from "@ovation/db";
import { eventFunctionFiles, eventTablesSql } from "@ovation/events";

class Shop extends Migration {
  override async up() {
    for (const sql of eventTablesSql) this.addSql(sql);
    this.addSql(`create table products (
      id text primary key,
      name text not null,
      kind smallint not null check (kind in (1, 2)),
      price_coins bigint not null check (price_coins >= 0),
      price_toman bigint not null check (price_toman >= 0),
      coins bigint not null check (coins >= 0),
      active boolean not null,
      created_at timestamptz not null,
      updated_at timestamptz not null)`);
    this.addSql(`create table cart_lines (
      user_id text not null,
      product_id text not null references products (id),
      quantity int not null check (quantity between 1 and 99),
      added_at timestamptz not null,
      primary key (user_id, product_id))`);
    // Inventory module: what is on hand, held for orders in flight, and sold.
    this.addSql(`create table inventory_stock (
      product_id text primary key,
      available bigint not null check (available >= 0),
      reserved bigint not null default 0 check (reserved >= 0),
      sold bigint not null default 0 check (sold >= 0))`);
    this.addSql(`create table inventory_adjustments (
      product_id text not null,
      idempotency_key text not null,
      delta bigint not null,
      adjusted_by text not null,
      adjusted_at timestamptz not null,
      primary key (product_id, idempotency_key))`);
  }
}

class Orders extends Migration {
  override async up() {
    this.addSql(`create table orders (
      id uuid primary key,
      user_id text not null,
      status smallint not null check (status between 1 and 4),
      payment_method smallint not null check (payment_method in (1, 2)),
      lines jsonb not null,
      asset text not null,
      total bigint not null check (total >= 0),
      coins bigint not null default 0,
      failure_reason text not null default '',
      idempotency_key text not null,
      request_hash bytea not null,
      created_at timestamptz not null,
      updated_at timestamptz not null,
      unique (user_id, idempotency_key))`);
    this.addSql("create index orders_user on orders (user_id, created_at desc, id desc)");
    this.addSql(`create table order_steps (
      order_id uuid not null references orders (id),
      seq int not null,
      step text not null,
      detail text not null default '',
      at timestamptz not null,
      primary key (order_id, seq))`);
    // Inventory module: units held for an order, and orders it must never reserve for again
    // (failed before their reservation arrived: events can come out of order).
    this.addSql(`create table inventory_reservations (
      order_id uuid not null,
      product_id text not null,
      quantity bigint not null check (quantity > 0),
      state smallint not null check (state between 1 and 3),
      primary key (order_id, product_id))`);
    this.addSql(`create table inventory_closed_orders (
      order_id uuid primary key,
      outcome smallint not null check (outcome in (2, 3)),
      closed_at timestamptz not null)`);
  }
}

/**
 * Payments the saga can check (docs/decisions/0022): the hold a buyer placed with their own
 * token when ordering with coins, and each payment the payment module made, recorded in the
 * transaction that announces it, so that a PaymentSucceeded or RefundRequested no payment
 * stands behind is refused wherever it comes from.
 */
class Payments extends Migration {
  override async up() {
    this.addSql("alter table orders add column hold_id uuid");
    this.addSql(`create table payments (
      order_id uuid primary key references orders (id),
      reference text not null,
      card_payment bytea,
      recorded_at timestamptz not null default now())`);
  }
}

export const orderMigrations = withFunctions(
  [
    { name: "0001_shop", class: Shop },
    { name: "0002_orders", class: Orders },
    { name: "0003_payments", class: Payments },
  ],
  // The inventory module's batch functions (docs/decisions/0047).
  [
    ...eventFunctionFiles,
    new URL("./sql/inventory_reserve.sql", import.meta.url),
    new URL("./sql/inventory_finish.sql", import.meta.url),
  ],
);
