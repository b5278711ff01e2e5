// Proves notifications_announce itself (sql/notifications_announce.sql) on a migrated gateway
// schema, without the service: an inserted notification is announced on the schema's channel
// with the payload the user channel shows, only once its transaction commits, and never when it
// rolls back.
import { randomUUID } from "node:crypto";
import { type Database, openDatabase } from "@ovation/db";
import { type TestEnvironment, testEnvironment, waitFor } from "@ovation/testkit";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { gatewayMigrations, notificationChannel } from "../src/store/migrations.ts";

const schema = "gateway";

let env: TestEnvironment;
let orm: Database;
let listener: pg.Client;
let writer: pg.Client;
const heard: unknown[] = [];

beforeAll(async () => {
  env = await testEnvironment();
  orm = await openDatabase({ url: env.databaseUrl, schema, entities: [], migrations: gatewayMigrations });
  listener = new pg.Client({ connectionString: env.databaseUrl });
  await listener.connect();
  listener.on("notification", (message) => {
    if (message.channel === notificationChannel(schema)) heard.push(JSON.parse(message.payload ?? "null"));
  });
  await listener.query(`listen ${notificationChannel(schema)}`);
  writer = new pg.Client({ connectionString: env.databaseUrl, options: `-c search_path=${schema}` });
  await writer.connect();
});
afterAll(async () => {
  await writer?.end();
  await listener?.end();
  await orm?.close();
  await env?.[Symbol.asyncDispose]();
});

const insert = (id: string, user: string) =>
  writer.query(
    `insert into notifications (id, user_id, type, text, data, created_at)
     values ($1, $2, 'boost', 'You were boosted', '{"boostId": "b1"}', '2026-12-05T10:11:12.345Z')`,
    [id, user],
  );

describe("notifications_announce", () => {
  it("announces a committed notification once, with the payload the user channel shows", async () => {
    const id = randomUUID();
    await writer.query("begin");
    await insert(id, "alice");
    // A marker committed after the insert, but before its transaction: heard first, so the
    // notification was not announced while its transaction was open.
    await orm.em.fork().execute(`select pg_notify('${notificationChannel(schema)}', '{"marker": true}')`);
    await waitFor(() => heard.length >= 1, { what: "the marker" });
    expect(heard).toEqual([{ marker: true }]);
    await writer.query("commit");
    await waitFor(() => heard.length >= 2, { what: "the notification" });
    expect(heard[1]).toEqual({
      userId: "alice",
      id,
      type: "boost",
      text: "You were boosted",
      data: { boostId: "b1" },
      createTime: "2026-12-05T10:11:12.345Z",
    });
  });

  it("announces nothing for a notification whose transaction rolled back", async () => {
    heard.length = 0;
    await writer.query("begin");
    await insert(randomUUID(), "bob");
    await writer.query("rollback");
    const after = randomUUID();
    await insert(after, "bob");
    await waitFor(() => heard.length >= 1, { what: "the committed notification" });
    expect(heard.map((payload) => (payload as { id: string }).id)).toEqual([after]);
  });
});
