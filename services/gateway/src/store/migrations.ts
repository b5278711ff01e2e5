// Gateway schema: the inbox of its durable consumers and the users' notifications. A trigger
// announces every new notification with pg_notify in the inserting transaction, so each
// gateway replica (each LISTENing on its own connection) hears it once, and only once it has
// committed. The trigger and its function live in a file of their own
// (sql/notifications_announce.sql), applied by openDatabase after these migrations whenever it
// changes; 0001 no longer creates them.
import { Migration, withFunctions } from "@ovation/db";
import { eventFunctionFiles, eventTablesSql } from "@ovation/events";
import { notificationLimits } from "../domain/notifications.ts";

/** The NOTIFY channel, "<schema>_notifications" like the outbox's "<schema>_outbox". */
export const notificationChannel = (schema: string) => `${schema}_notifications`;

class Notifications extends Migration {
  override async up() {
    for (const sql of eventTablesSql) this.addSql(sql);
    // Bounds the domain keeps far below (domain/notifications.ts): a row that breaks them is a
    // bug, refused here rather than sent as a NOTIFY Postgres would refuse at commit.
    this.addSql(`create table notifications (
      id uuid primary key,
      user_id text not null check (octet_length(user_id) between 1 and ${notificationLimits.userIdMaxBytes}),
      type text not null check (octet_length(type) between 1 and 64),
      text text not null check (octet_length(text) <= ${notificationLimits.textMaxBytes}),
      data jsonb not null default '{}' check (octet_length(data::text) <= ${notificationLimits.dataMaxBytes}),
      created_at timestamptz not null,
      inserted_at timestamptz not null default now())`);
    this.addSql("create index notifications_user on notifications (user_id, created_at desc, id desc)");
  }
}

export const gatewayMigrations = withFunctions(
  [{ name: "0001_notifications", class: Notifications }],
  [...eventFunctionFiles, new URL("./sql/notifications_announce.sql", import.meta.url)],
);
