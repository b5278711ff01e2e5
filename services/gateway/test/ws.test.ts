// The WebSocket side against real services: authentication (query, first frame, timeout),
// protocol errors, limits, fan-out across gateway replicas, heartbeats that drop dead peers,
// and a slow reader that is dropped without holding memory or slowing the others.
import type { Socket } from "node:net";
import { waitFor } from "@ovation/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { call, type GatewayHarness, openSocket, type SocketClient, startGatewayHarness } from "./helpers.ts";

let h: GatewayHarness;
let url: string;
let viewer: string;
let host: string;
let roomId: string;
const sendBufferMaxBytes = 64 * 1024;

async function signedIn(token: string, base = url): Promise<SocketClient> {
  const client = await openSocket(base, `?token=${token}`);
  await client.next((m) => m.type === "authenticated");
  return client;
}

async function subscribed(client: SocketClient, channel: string): Promise<void> {
  client.send({ op: "subscribe", channel });
  await client.next((m) => m.type === "subscribed" && m.channel === channel);
}

beforeAll(async () => {
  h = await startGatewayHarness({
    WS_PING_INTERVAL_MS: "100",
    WS_AUTH_TIMEOUT_MS: "300",
    WS_SUBSCRIPTIONS_MAX: "3",
    WS_CONNECTIONS_PER_USER_MAX: "4",
    WS_SEND_BUFFER_MAX_BYTES: String(sendBufferMaxBytes),
    WS_SLOW_CLIENT_GRACE_MS: "300",
  });
  url = h.gateway.url;
  const admin = await h.env.token("root", ["admin"]);
  viewer = await h.env.token("vic", ["user"]);
  host = await h.env.token("hana", ["user", "host"]);
  await call(url, "POST", "/api/admin/gifts", {
    token: admin,
    body: { gift: { id: "rose", name: "Rose", price: "10", animationKey: "rose" } },
  });
  await call(url, "POST", "/api/admin/wallet/mint", {
    token: admin,
    body: { userId: "vic", money: { asset: "COIN", amount: "1000" }, idempotencyKey: crypto.randomUUID() },
  });
  roomId = (await call(url, "POST", "/api/rooms", { token: host, body: {} })).body.room.id;
});
afterAll(() => h?.close());

describe("websocket", () => {
  it("closes a socket that does not authenticate in time with 4401", async () => {
    const silent = await openSocket(url);
    expect((await silent.closed).code).toBe(4401);
    const early = await openSocket(url);
    early.send({ op: "subscribe", channel: `room:${roomId}` });
    expect(await early.closed).toEqual({ code: 4401, reason: "authenticate first" });
  });

  it("answers bad frames and channels with errors and keeps the connection", async () => {
    const client = await signedIn(viewer);
    client.socket.send("not json");
    await client.next((m) => m.type === "error" && m.message === "frames must be JSON");
    client.send({ op: "subscribe", channel: "bank:1", id: "a" });
    await client.next((m) => m.type === "error" && m.id === "a" && /unknown channel/.test(m.message));
    client.send({ op: "subscribe", channel: "user:hana", id: "b" });
    await client.next((m) => m.type === "error" && m.id === "b" && /always your own/.test(m.message));
    client.send({ op: "subscribe", channel: "room:", id: "c" });
    await client.next((m) => m.type === "error" && m.id === "c");
    for (const channel of ["room:a", "room:b", "room:c"]) await subscribed(client, channel);
    client.send({ op: "subscribe", channel: "room:d", id: "d" });
    await client.next((m) => m.type === "error" && m.id === "d" && m.code === "resource_exhausted");
    client.send({ op: "unsubscribe", channel: "room:a", id: "e" });
    await client.next((m) => m.type === "unsubscribed" && m.id === "e");
    client.send({ op: "ping", id: "f" });
    await client.next((m) => m.type === "pong" && m.id === "f");
    client.close();
  });

  it("limits connections per user", async () => {
    const token = await h.env.token("many", ["user"]);
    const open = [];
    for (let i = 0; i < 4; i++) open.push(await signedIn(token));
    const extra = await openSocket(url, `?token=${token}`);
    expect((await extra.closed).code).toBe(4429);
    for (const client of open) client.close();
  });

  it("delivers a room's alerts through every gateway replica to its own sockets", async () => {
    const replica = await h.extraGateway({});
    const [a, b] = [await signedIn(viewer), await signedIn(host, replica.url)];
    await subscribed(a, `room:${roomId}`);
    await subscribed(b, `room:${roomId}`);
    const sent = await call(url, "POST", "/api/gifts/send", {
      token: viewer,
      body: { roomId, giftId: "rose", count: 2, idempotencyKey: crypto.randomUUID() },
    });
    expect(sent.status).toBe(200);
    for (const client of [a, b]) {
      const alert = await client.next((m) => m.type === "gift.sent");
      expect(alert.data).toMatchObject({ sendId: sent.body.gift.id, count: 2 });
    }
    // Each replica delivered exactly one copy to its socket.
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(a.messages.filter((m) => m.type === "gift.sent")).toHaveLength(1);
    expect(b.messages.filter((m) => m.type === "gift.sent")).toHaveLength(1);
    a.close();
    b.close();
  });

  it("terminates a peer that stops answering pings", async () => {
    const before = h.gateway.hub.stats().connections;
    const dead = await openSocket(url, `?token=${viewer}`, { autoPong: false });
    await dead.next((m) => m.type === "authenticated");
    const started = Date.now();
    expect((await dead.closed).code).toBe(1006);
    expect(Date.now() - started).toBeLessThan(2_000);
    await waitFor(() => h.gateway.hub.stats().connections === before);
  });

  it("drops a slow reader's updates and then the reader, while a fast one gets every update", async () => {
    const channel = "room:flood";
    const fast = await signedIn(viewer);
    const slow = await signedIn(host);
    await subscribed(fast, channel);
    await subscribed(slow, channel);
    // The slow client stops reading from its socket; the kernel buffers fill, then the gateway's.
    (slow.socket as unknown as { _socket: Socket })._socket.pause();
    const frames = 200;
    const pad = "x".repeat(32 * 1024);
    let delivered = 0;
    for (let i = 0; i < frames; i++) {
      delivered += h.gateway.hub.publish(
        { kind: "room", id: "flood", type: "test.flood", data: { i, pad } },
        `e${i}`,
        new Date(),
      );
      await new Promise((resolve) => setTimeout(resolve, 2));
    }
    await waitFor(() => fast.messages.filter((m) => m.type === "test.flood").length === frames);
    expect(delivered).toBeLessThan(2 * frames);
    // Over the limit for longer than the grace period: closed, then terminated.
    await waitFor(() => h.gateway.hub.stats().connections === 1, { timeoutMs: 5_000 });
    const order = fast.messages.filter((m) => m.type === "test.flood").map((m) => m.data.i);
    expect(order).toEqual([...Array(frames).keys()]);
    fast.close();
  });
});
