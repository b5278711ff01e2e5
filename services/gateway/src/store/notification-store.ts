// Notifications in the gateway's own schema: written by the durable consumers inside their
// inbox transaction, read newest first by their owner.
import type { Database, EntityManager } from "@ovation/db";
import type { PageCursor } from "@ovation/server";
import type { Notification } from "../domain/notifications.ts";

export const gatewaySchema = "gateway";

interface NotificationRow {
  id: string;
  type: Notification["type"];
  text: string;
  data: Notification["data"];
  created_at: Date;
}

export type StoredNotification = Omit<Notification, "userId">;

export class NotificationStore {
  readonly #orm: Database;

  constructor(orm: Database) {
    this.#orm = orm;
  }

  /**
   * Inserts the notifications in the caller's transaction. An id already stored (the same
   * boost or transfer under another event id) is skipped, and only inserted rows are announced.
   */
  async insert(em: EntityManager, notifications: readonly Notification[]): Promise<void> {
    if (notifications.length === 0) return;
    const rows = notifications.map((n) => ({
      id: n.id,
      user_id: n.userId,
      type: n.type,
      text: n.text,
      data: n.data,
      created_at: n.createdAt.toISOString(),
    }));
    // Rows travel as one JSON array: one statement however large the batch.
    await em.execute(
      `insert into notifications (id, user_id, type, text, data, created_at)
       select id, user_id, type, text, data, created_at
       from jsonb_to_recordset(?::jsonb)
         as r(id uuid, user_id text, type text, text text, data jsonb, created_at timestamptz)
       order by created_at, id
       on conflict (id) do nothing`,
      [JSON.stringify(rows)],
    );
  }

  /** The user's notifications, newest first, `limit` of them after `before` (exclusive). */
  async list(userId: string, limit: number, before: PageCursor | undefined): Promise<StoredNotification[]> {
    const rows = await this.#orm.em.fork().execute<NotificationRow[]>(
      `select id, type, text, data, created_at from notifications
       where user_id = ? ${before ? "and (created_at, id) < (?, ?)" : ""}
       order by created_at desc, id desc limit ?`,
      before ? [userId, before.at, before.id, limit] : [userId, limit],
    );
    return rows.map((row) => ({
      id: row.id,
      type: row.type,
      text: row.text,
      data: row.data,
      createdAt: new Date(row.created_at),
    }));
  }
}
