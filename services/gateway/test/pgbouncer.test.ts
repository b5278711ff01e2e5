// Proves that the whole stack works through PgBouncer in transaction mode (decision 0043): every
// service's DATABASE_URL names its pool on a PgBouncer of this test's own (Debian's 1.18, its own
// port and files), DATABASE_DIRECT_URL the database, and real work flows: gifts sent through the
// gateway debit the sender and credit the host; a PK battle ends by its durable timer and is
// settled (graphile-worker's jobs, without prepared statements, through the pooler); an order's
// saga completes. Meanwhile nothing LISTENs through PgBouncer (each process has its one direct
// LISTEN connection), and PgBouncer holds no more server connections than its pools allow.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { defaultDatabaseTimeouts, defaultListenerApplicationName } from "@ovation/db";
import { startPgBouncer } from "@ovation/db/pgbouncer";
import { serviceNames, testEnvironment, waitFor } from "@ovation/testkit";
import { freePort, startStack, unthrottledGateway } from "@ovation/testkit/bench";
import pg from "pg";
import { describe, expect, it } from "vitest";
import { type Json, restCall, restOk } from "../soak/rest.ts";

/** Server connections of each service's pool: small, so two services cannot pass one budget. */
const poolSize = 2;

describe("the stack through PgBouncer in transaction mode", () => {
  it("sends gifts, settles a PK battle by its timer and completes an order, listening only directly", async () => {
    await using env = await testEnvironment();
    const directory = await mkdtemp(path.join(tmpdir(), "ovation-pgbouncer-"));
    try {
      await using pgBouncer = await startPgBouncer({
        directUrl: env.databaseUrl,
        databases: serviceNames().map((schema) => ({ schema, poolSize, timeouts: defaultDatabaseTimeouts })),
        directory,
        port: await freePort(),
      });
      await using stack = await startStack(env, {
        env: {
          ...unthrottledGateway,
          LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? "silent",
          PK_DURATION_MIN_SECONDS: "2",
          PK_SETTLE_DELAY_MS: "200",
          CARD_FAILURE_RATE: "0",
        },
        serviceEnv: (service) => ({
          DATABASE_URL: pgBouncer.url(service),
          DATABASE_DIRECT_URL: env.databaseUrl,
        }),
      });
      const gateway = stack.url("gateway");
      const admin = await env.token("root", ["admin"]);
      const hana = await env.token("hana", ["user", "host"]);
      const hugo = await env.token("hugo", ["user", "host"]);
      const vic = await env.token("vic", ["user"]);
      const call = (method: string, route: string, token: string, body?: unknown, key?: string) =>
        restOk(gateway, method, route, { token, body, idempotencyKey: key, giveUpAfterMs: 30_000 });

      await call("POST", "/api/admin/gifts", admin, {
        gift: { id: "rose", name: "Rose", price: "10", pkPoints: "10", animationKey: "rose" },
      });
      await call(
        "POST",
        "/api/admin/wallet/mint",
        admin,
        { userId: "vic", money: { asset: "COIN", amount: "1000" }, reference: "welcome" },
        "mint-vic",
      );
      const room = (await call("POST", "/api/rooms", hana, { title: "late show" })).room.id;
      await call("POST", "/api/rooms", hugo, {});
      // PK learns that a room is live from the gift service's events: ask until it knows both.
      const battle = await waitFor(
        async () => {
          const answer = await restCall(gateway, "POST", "/api/pk", {
            token: hana,
            body: {
              mode: "BATTLE_MODE_SOLO",
              sideA: ["hana"],
              sideB: ["hugo"],
              durationSeconds: 3,
              tiePolicy: "TIE_POLICY_DRAW",
              idempotencyKey: `pk-${Date.now()}`,
            },
          });
          if (answer.status === 412) return undefined;
          expect(answer.status).toBe(200);
          return answer.body.battle.id as string;
        },
        { timeoutMs: 30_000, intervalMs: 200, what: "both hosts live for PK" },
      );
      await call("POST", `/api/pk/${battle}/accept`, hugo, {});
      for (const n of [1, 2, 3])
        await call("POST", "/api/gifts/send", vic, { roomId: room, giftId: "rose", count: 1 }, `send-${n}`);

      // The battle's end and its settlement are durable timers (graphile-worker through PgBouncer).
      const settled = await waitFor(
        async () => {
          const { battle: read } = await call("GET", `/api/pk/${battle}`, vic);
          return read.state === "BATTLE_STATE_SETTLED" ? read : undefined;
        },
        { timeoutMs: 30_000, intervalMs: 200, what: "the battle settled by its timers" },
      );
      expect(settled.sides.reduce((sum: number, side: Json) => sum + Number(side.points ?? 0), 0)).toBe(30);
      await waitFor(
        async () =>
          (await call("GET", "/api/wallet", hana)).balances.some(
            (balance: Json) => balance.asset === "COIN" && balance.amount === "21",
          ),
        { timeoutMs: 30_000, intervalMs: 200, what: "the host credited 70 % of 30 coins" },
      );

      await call("POST", "/api/admin/products", admin, {
        product: { id: "badge", name: "Badge", kind: "PRODUCT_KIND_ITEM", priceCoins: "200", active: true },
      });
      await call("POST", "/api/admin/products/badge/stock", admin, { delta: "5", idempotencyKey: "stock-1" });
      const order = (
        await call("POST", "/api/orders", vic, {
          items: [{ productId: "badge", quantity: 1 }],
          paymentMethod: "PAYMENT_METHOD_WALLET",
          idempotencyKey: "order-1",
        })
      ).order.id;
      await waitFor(
        async () =>
          (await call("GET", `/api/orders/${order}`, vic)).order.status === "ORDER_STATUS_COMPLETED",
        { timeoutMs: 30_000, intervalMs: 200, what: "the order completed" },
      );
      const balances = (await call("GET", "/api/wallet", vic)).balances;
      expect(balances.find((balance: Json) => balance.asset === "COIN").amount).toBe(String(1000 - 30 - 200));

      const db = new pg.Client({ connectionString: env.databaseUrl, application_name: "pgbouncer-test" });
      await db.connect();
      try {
        const { rows } = await db.query<{ application_name: string; listening: boolean; n: number }>(
          `select application_name, query ilike 'listen%' as listening, count(*)::int as n
           from pg_stat_activity where datname = current_database() and pid <> pg_backend_pid()
           group by 1, 2 order by 1, 2`,
        );
        const serverConnections = await pgBouncer.serverConnections();
        console.log(
          `through PgBouncer: ${stack.services.size} processes; PgBouncer's server connections ${serverConnections}; ` +
            `pg_stat_activity: ${rows.map((row) => `${row.application_name || "(none)"}${row.listening ? " LISTEN" : ""} ${row.n}`).join(", ")}`,
        );
        // Every LISTEN is on a process's shared direct connection, none through PgBouncer.
        const listening = rows.filter((row) => row.listening);
        expect(listening.map((row) => row.application_name)).toEqual([defaultListenerApplicationName]);
        expect(listening[0]!.n).toBeLessThanOrEqual(stack.services.size);
        expect(serverConnections).toBeLessThanOrEqual(serviceNames().length * poolSize);
      } finally {
        await db.end();
      }
    } finally {
      await rm(directory, { recursive: true, force: true });
    }
  }, 180_000);
});
