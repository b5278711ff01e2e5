// Card processor schema: every charge with the exact result bytes it signed, and its refund.
import { Migration } from "@ovation/db";

class Charges extends Migration {
  override async up() {
    // One row per (merchant, idempotency key): a retry finds the first answer, concurrent
    // duplicates meet at the unique index. The signed bytes are kept as they were signed.
    this.addSql(`create table charges (
      id uuid primary key,
      merchant text not null,
      idempotency_key text not null,
      request_hash bytea not null,
      reference text not null,
      customer_id text not null,
      asset text not null,
      amount bigint not null check (amount > 0),
      succeeded boolean not null,
      result bytea not null,
      signature bytea not null,
      key_id text not null,
      refund_id uuid,
      refund_key text,
      refund_amount bigint check (refund_amount > 0 and refund_amount <= amount),
      refunded_at timestamptz,
      created_at timestamptz not null default now(),
      unique (merchant, idempotency_key),
      check (succeeded or refund_id is null))`);
  }
}

export const cardMigrations = [{ name: "0001_charges", class: Charges }];
