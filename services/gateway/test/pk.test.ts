// A PK battle through the front door, with the real wallet, gift and PK services: REST routes
// from the annotations, the invitation on the invited host's "user" channel, live scores on
// "pk:<id>" as gifts are paid, the start and the result on the participants' room channels,
// each gift scored at the wallet's journal time of its debit, and live scores that arrive out of
// order never showing an older score last.
import { create, toBinary } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { jetstream } from "@nats-io/jetstream";
import { BattleScoredSchema } from "@ovation/proto/gen/ovation/pk/v1/events_pb.ts";
import { Side } from "@ovation/proto/gen/ovation/pk/v1/pk_pb.ts";
import { waitFor } from "@ovation/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { call, type GatewayHarness, openSocket, type SocketClient, startGatewayHarness } from "./helpers.ts";

let h: GatewayHarness;
let url: string;
const tokens: Record<string, string> = {};
const rooms: Record<string, string> = {};

async function signedIn(token: string): Promise<SocketClient> {
  const client = await openSocket(url, { token });
  await client.next((m) => m.type === "authenticated");
  return client;
}

async function subscribed(client: SocketClient, channel: string): Promise<void> {
  client.send({ op: "subscribe", channel });
  await client.next((m) => m.type === "subscribed" && m.channel === channel);
}

beforeAll(async () => {
  h = await startGatewayHarness({}, {}, { pk: { PK_DURATION_MIN_SECONDS: "1", PK_SETTLE_DELAY_MS: "300" } });
  url = h.gateway.url;
  tokens.admin = await h.env.token("root", ["admin"]);
  tokens.viewer = await h.env.token("vic", ["user"]);
  for (const host of ["hana", "hugo"]) {
    tokens[host] = await h.env.token(host, ["user", "host"]);
    rooms[host] = (await call(url, "POST", "/api/rooms", { token: tokens[host], body: {} })).body.room.id;
  }
  await call(url, "POST", "/api/admin/gifts", {
    token: tokens.admin,
    body: { gift: { id: "rose", name: "Rose", price: "10", pkPoints: "10", animationKey: "rose" } },
  });
  await call(url, "POST", "/api/admin/wallet/mint", {
    token: tokens.admin,
    body: { userId: "vic", money: { asset: "COIN", amount: "1000" }, idempotencyKey: crypto.randomUUID() },
  });
});
afterAll(() => h?.close());

describe("a PK battle through the gateway", () => {
  it("invites, starts, scores live, and shows the result on the battle's and the rooms' channels", async () => {
    const invited = await signedIn(tokens.hugo!);
    await subscribed(invited, "user");
    const watcher = await signedIn(tokens.viewer!);
    await subscribed(watcher, `room:${rooms.hana}`);

    // PK learns that both hosts are live from gift's room events.
    const create = () =>
      call(url, "POST", "/api/pk", {
        token: tokens.hana,
        body: {
          mode: "BATTLE_MODE_SOLO",
          sideA: ["hana"],
          sideB: ["hugo"],
          durationSeconds: 2,
          idempotencyKey: "pk-1",
        },
      });
    const created = await waitFor(
      async () => {
        const reply = await create();
        return reply.status === 200 ? reply : undefined;
      },
      { what: "both hosts live in PK" },
    );
    const battleId: string = created.body.battle.id;
    expect(created.body.battle.state).toBe("BATTLE_STATE_PENDING");
    const invitation = await invited.next((m) => m.type === "pk.invited");
    expect(invitation).toMatchObject({ channel: "user", data: { id: battleId } });

    await subscribed(watcher, `pk:${battleId}`);
    const accepted = await call(url, "POST", `/api/pk/${battleId}/accept`, { token: tokens.hugo, body: {} });
    expect(accepted.status).toBe(200);
    expect(accepted.body.battle.state).toBe("BATTLE_STATE_ACTIVE");
    await watcher.next((m) => m.type === "pk.started" && m.channel === `pk:${battleId}`);
    await watcher.next((m) => m.type === "pk.started" && m.channel === `room:${rooms.hana}`);

    const sent = await call(url, "POST", "/api/gifts/send", {
      token: tokens.viewer,
      body: { roomId: rooms.hana, giftId: "rose", count: 3, idempotencyKey: crypto.randomUUID() },
    });
    expect(sent.status).toBe(200);
    const scored = await watcher.next((m) => m.type === "pk.scored" && m.data.sides[0].points === "30");
    expect(scored.data.sides[0]).toMatchObject({
      mvpUserId: "vic",
      topSupporters: [{ userId: "vic", points: "30" }],
    });

    const ended = await watcher.next((m) => m.type === "pk.ended" && m.channel === `pk:${battleId}`, 15_000);
    expect(ended.data).toMatchObject({ state: "BATTLE_STATE_SETTLED", result: "BATTLE_RESULT_SIDE_A" });
    await watcher.next((m) => m.type === "pk.ended" && m.channel === `room:${rooms.hana}`);
    expect(watcher.messages.some((m) => m.type === "pk.time_up")).toBe(true);

    const shown = await call(url, "GET", `/api/pk/${battleId}`, { token: tokens.viewer });
    expect(shown.body.battle).toMatchObject({ state: "BATTLE_STATE_SETTLED", remainingMs: "0" });
    const history = await call(url, "GET", "/api/pk?hostId=hana", { token: tokens.viewer });
    expect(history.body.record).toMatchObject({ hostId: "hana", wins: 1, winStreak: 1 });

    // The gift counted at the wallet's journal time of its debit, which is what the send answered.
    const sendTime = new Date(sent.body.gift.sendTime).getTime();
    const scoredAt = await h
      .pk!.orm.em.fork()
      .execute<{ committed_at: Date }[]>("select committed_at from battle_gifts where battle_id = ?", [
        battleId,
      ]);
    const journal = await h.wallet.orm.em
      .fork()
      .execute<{ created_at: Date }[]>(
        "select created_at from transfers where kind = 5 and debit_owner = 'user:vic' order by created_at desc limit 1",
      );
    expect(scoredAt.map((r) => new Date(r.committed_at).getTime())).toEqual([sendTime]);
    expect(new Date(journal[0]!.created_at).getTime()).toBe(sendTime);
    invited.close();
    watcher.close();
  });

  it("answers a re-invitation of a host who just declined with 429 and Retry-After", async () => {
    const invite = () =>
      call(url, "POST", "/api/pk", {
        token: tokens.hana,
        body: {
          mode: "BATTLE_MODE_SOLO",
          sideA: ["hana"],
          sideB: ["hugo"],
          idempotencyKey: crypto.randomUUID(),
        },
      });
    const first = await invite();
    expect(first.status).toBe(200);
    const declined = await call(url, "POST", `/api/pk/${first.body.battle.id}/decline`, {
      token: tokens.hugo,
      body: {},
    });
    expect(declined.status).toBe(200);
    const again = await invite();
    expect(again.status).toBe(429);
    expect(again.body).toMatchObject({ code: "resource_exhausted" });
    expect(again.body.message).toMatch(/^hugo turned down your last invitation/);
    const retryAfterSeconds = Number(again.headers.get("retry-after"));
    expect(retryAfterSeconds).toBeGreaterThan(0);
    expect(retryAfterSeconds).toBeLessThanOrEqual(300); // PK_REINVITE_COOLDOWN_SECONDS' default
  });

  it("never lets an older live score overwrite a newer one that arrived first", async () => {
    // Two PK replicas' outbox relays publish independently, so two announcements of one battle
    // may be stored out of order; each carries the time of its claim, increasing per battle.
    const battleId = crypto.randomUUID();
    const watcher = await signedIn(tokens.viewer!);
    await subscribed(watcher, `pk:${battleId}`);
    const nats = await h.env.connectNats();
    const js = jetstream(nats);
    const subject = h.gateway.bus.names.subject("pk.battle.scored");
    const claimed = Date.now();
    const scored = (offsetMs: number, a: bigint, b: bigint) =>
      toBinary(
        BattleScoredSchema,
        create(BattleScoredSchema, {
          battleId,
          sides: [
            { side: Side.A, points: a },
            { side: Side.B, points: b },
          ],
          scoredTime: timestampFromDate(new Date(claimed + offsetMs)),
        }),
      );
    await js.publish(subject, scored(100, 50n, 80n));
    await js.publish(subject, scored(0, 30n, 0n));
    await js.publish(subject, scored(200, 60n, 80n));
    // Messages of one battle reach a socket in stream order: once the last is in, so is the rest.
    await watcher.next((m) => m.type === "pk.scored" && m.data.sides[0].points === "60");
    const shown = watcher.messages
      .filter((m) => m.type === "pk.scored")
      .map((m) => m.data.sides.map((side: { points: string }) => side.points).join(":"));
    expect(shown).toEqual(["50:80", "60:80"]);
    watcher.close();
    await nats.close();
  });

  it("lists the PK routes in the OpenAPI document", async () => {
    const paths = Object.keys((await call(url, "GET", "/api/openapi.json")).body.paths);
    expect(paths).toEqual(
      expect.arrayContaining([
        "/api/pk",
        "/api/pk/{battleId}",
        "/api/pk/{battleId}/accept",
        "/api/pk/{battleId}/decline",
        "/api/pk/{battleId}/cancel",
        "/api/admin/pk/bonus-windows",
      ]),
    );
  });

  it("answers bad PK requests with 4xx, never 500", async () => {
    expect((await call(url, "GET", "/api/pk/not-a-uuid", { token: tokens.viewer })).status).toBe(400);
    expect((await call(url, "GET", `/api/pk/${crypto.randomUUID()}`, { token: tokens.viewer })).status).toBe(
      404,
    );
    const viewerCreate = await call(url, "POST", "/api/pk", {
      token: tokens.viewer,
      body: { mode: "BATTLE_MODE_SOLO", sideA: ["vic"], sideB: ["hana"], idempotencyKey: "x" },
    });
    expect(viewerCreate.status).toBe(403);
    const bonus = await call(url, "POST", "/api/admin/pk/bonus-windows", {
      token: tokens.admin,
      body: { multiplier: 2, durationSeconds: 60, idempotencyKey: "w1" },
    });
    expect(bonus.status).toBe(200);
    expect(bonus.body.window.multiplier).toBe(2);
  });
});
