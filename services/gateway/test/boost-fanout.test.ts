// One boost bought over REST reaches each of its three consumers exactly once: the gift
// service's discovery ranking, the PK service's side boosts and the gateway's notifications,
// each through its own durable consumer, against the real services, Postgres and NATS; the
// room's viewers see it live.
import { randomUUID } from "node:crypto";
import { waitFor } from "@ovation/testkit";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { call, type GatewayHarness, type Json, openSocket, startGatewayHarness } from "./helpers.ts";

let h: GatewayHarness;
let db: pg.Client;

beforeAll(async () => {
  h = await startGatewayHarness({}, {}, { pk: {} });
  db = new pg.Client({ connectionString: h.env.databaseUrl });
  await db.connect();
}, 60_000);
afterAll(async () => {
  await db?.end();
  await h?.close();
});

const applied = async (schema: string, consumer: string, eventId: string) =>
  (
    await db.query<{ n: number }>(
      `select count(*)::int as n from ${schema}.inbox where consumer = $1 and event_id = $2`,
      [consumer, eventId],
    )
  ).rows[0]!.n;

describe("boost fan-out", () => {
  it("reaches gift discovery, PK side boosts and the host's notifications once each", async () => {
    const admin = await h.env.token("root", ["admin"]);
    const host = await h.env.token("star", ["user", "host"]);
    const fan = await h.env.token("fan", ["user"]);
    const room = (await call(h.gateway.url, "POST", "/api/rooms", { token: host, body: { title: "live" } }))
      .body.room;
    await call(h.gateway.url, "POST", "/api/admin/wallet/mint", {
      token: admin,
      body: { userId: "fan", money: { asset: "COIN", amount: "1000" }, idempotencyKey: randomUUID() },
    });
    const viewer = await openSocket(h.gateway.url, { token: fan });
    viewer.send({ op: "subscribe", channel: `room:${room.id}` });
    await viewer.next((m) => m.type === "subscribed");
    const body = {
      targetType: "BOOST_TARGET_TYPE_ROOM",
      targetId: room.id,
      amount: "400",
      durationHours: 12,
      idempotencyKey: randomUUID(),
    };
    const bought = await call(h.gateway.url, "POST", "/api/boosts", { token: fan, body });
    expect(bought.status, JSON.stringify(bought.body)).toBe(200);
    // A retry with the same key buys nothing more and publishes nothing more.
    const retried = await call(h.gateway.url, "POST", "/api/boosts", { token: fan, body });
    expect(retried.body.boost.boostId).toBe(bought.body.boost.boostId);
    expect(bought.body.balance).toBe("600");
    const boostId: string = bought.body.boost.boostId;

    await waitFor(
      async () =>
        (await applied("gift", "gift-discovery", boostId)) === 1 &&
        (await applied("pk", "pk-side-boosts", boostId)) === 1 &&
        (await applied("gateway", "gateway-boost-notifications", boostId)) === 1,
      { what: "all three consumers" },
    );
    // The room's viewers see it live.
    const live = await viewer.next((m) => m.type === "room.boosted");
    expect(live.data).toMatchObject({ boostId, buyerId: "fan", amount: "400", durationHours: 12 });
    viewer.close();
    const discover = await call(h.gateway.url, "GET", "/api/discover");
    expect(discover.status).toBe(200);
    const entry = discover.body.entries.find((e: Json) => e.room.id === room.id);
    expect(entry).toMatchObject({ boost: "400", score: "400" });
    const notes = await call(h.gateway.url, "GET", "/api/notifications", { token: host });
    expect(notes.body.notifications.filter((n: Json) => n.data.boostId === boostId)).toHaveLength(1);
    // Exactly one event was published for the boost, whatever the retries.
    const { bus } = h.wallet;
    const info = await bus.jsm.streams.info(bus.names.stream("WALLET"), {
      subjects_filter: bus.names.subject("wallet.boost.purchased"),
    });
    expect(info.state.subjects?.[bus.names.subject("wallet.boost.purchased")]).toBe(1);
  });
});
