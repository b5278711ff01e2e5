// Order schema. The shop's own tables (products, carts) and the inventory module's tables
// (inventory_*): the inventory module owns stock and reaches the shop only through events and
// its own functions, so it can become its own deployable later.
import { Migration } from "@ovation/db";
import { eventTablesSql } from "@ovation/events";

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

export const orderMigrations = [{ name: "0001_shop", class: Shop }];
