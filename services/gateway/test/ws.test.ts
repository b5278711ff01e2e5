// The WebSocket side against real services: authentication (subprotocol header, first frame,
// timeout; the URL only behind a flag), protocol errors, limits (per user, and per address
// before signing in), fan-out across gateway replicas, a replica that acknowledges nothing
// before its feeds are live, heartbeats that drop dead peers, and a slow reader that is dropped
// without holding memory or slowing the others.
import http, { type IncomingHttpHeaders } from "node:http";
import type { Socket } from "node:net";
import { jetstreamManager } from "@nats-io/jetstream";
import { FaultProxy, waitFor } from "@ovation/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { call, type GatewayHarness, openSocket, type SocketClient, startGatewayHarness } from "./helpers.ts";

let h: GatewayHarness;
let url: string;
let viewer: string;
let host: string;
let roomId: string;
const sendBufferMaxBytes = 64 * 1024;

async function signedIn(token: string, base = url): Promise<SocketClient> {
  const client = await openSocket(base, { token });
  await client.next((m) => m.type === "authenticated");
  return client;
}

/** Sends a bare upgrade request and reports the status and headers the gateway answered with. */
function rawUpgrade(
  base: string,
  headers: Record<string, string> = {},
): Promise<{ status: number; headers: IncomingHttpHeaders }> {
  return new Promise((resolve, reject) => {
    const request = http.request(`${base}/ws`, {
      headers: {
        connection: "Upgrade",
        upgrade: "websocket",
        "sec-websocket-version": "13",
        "sec-websocket-key": Buffer.from(crypto.getRandomValues(new Uint8Array(16))).toString("base64"),
        ...headers,
      },
    });
    request.once("upgrade", (response, socket) => {
      socket.destroy();
      resolve({ status: response.statusCode ?? 0, headers: response.headers });
    });
    request.once("response", (response) => {
      response.resume();
      resolve({ status: response.statusCode ?? 0, headers: response.headers });
    });
    request.once("error", reject);
    request.end();
  });
}

/** Channel messages of `kind` written to sockets so far (all gateways of this process), from /metrics. */
async function messagesSent(kind: string): Promise<number> {
  const metrics = await (await fetch(`${url}/metrics`)).text();
  const line = new RegExp(`^ovation_gateway_ws_messages_sent_total\\{kind="${kind}"\\} (\\d+)$`, "m");
  return Number(metrics.match(line)?.[1] ?? 0);
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

  it("takes the token from the Sec-WebSocket-Protocol header, selects ovation.v1 and never echoes the token", async () => {
    const client = await openSocket(url, { token: viewer });
    expect(client.socket.protocol).toBe("ovation.v1");
    await client.next((m) => m.type === "authenticated" && m.userId === "vic");
    client.close();
    const upgraded = await rawUpgrade(url, { "sec-websocket-protocol": `ovation.v1, bearer.${viewer}` });
    expect(upgraded.status).toBe(101);
    expect(upgraded.headers["sec-websocket-protocol"]).toBe("ovation.v1");
    expect(JSON.stringify(upgraded.headers)).not.toContain(viewer);
    const twoTokens = await rawUpgrade(url, {
      "sec-websocket-protocol": `ovation.v1, bearer.${viewer}, bearer.${host}`,
    });
    expect(twoTokens.status).toBe(400);
    const forged = await openSocket(url, { token: "not.a.jwt" });
    expect((await forged.closed).code).toBe(4401);
  });

  it("refuses a token in the URL with 4401 unless WS_QUERY_TOKEN allows it for old clients", async () => {
    const refused = await openSocket(url, { query: `?token=${viewer}` });
    const closed = await refused.closed;
    expect(closed.code).toBe(4401);
    expect(closed.reason).toMatch(/URL/);
    expect(refused.messages).toEqual([]);
    const legacy = await h.extraGateway({ WS_QUERY_TOKEN: "true" });
    const old = await openSocket(legacy.url, { query: `?token=${viewer}` });
    await old.next((m) => m.type === "authenticated" && m.userId === "vic");
    old.close();
  });

  it("limits sockets per client address until they sign in: HTTP 429 with Retry-After beyond", async () => {
    const limited = await h.extraGateway({
      WS_UNAUTHENTICATED_PER_ADDRESS_MAX: "2",
      WS_AUTH_TIMEOUT_MS: "10000",
    });
    const [a, b] = [await openSocket(limited.url), await openSocket(limited.url)];
    const refused = await rawUpgrade(limited.url);
    expect(refused.status).toBe(429);
    expect(Number(refused.headers["retry-after"])).toBeGreaterThan(0);
    // Signing in frees the slot; a socket that closes frees it too.
    a.send({ op: "auth", token: viewer });
    await a.next((m) => m.type === "authenticated");
    const c = await openSocket(limited.url);
    expect((await rawUpgrade(limited.url)).status).toBe(429);
    b.close();
    await b.closed;
    await waitFor(async () => (await rawUpgrade(limited.url)).status === 101);
    for (const client of [a, c]) client.close();
  });

  it("counts sockets per forwarded address behind a trusted proxy, as the REST limits do", async () => {
    const proxied = await h.extraGateway({
      WS_UNAUTHENTICATED_PER_ADDRESS_MAX: "1",
      WS_AUTH_TIMEOUT_MS: "10000",
      TRUST_PROXY: "true",
    });
    const from = (address: string) => ({
      client: { headers: { "x-forwarded-for": `198.51.100.9, ${address}` } },
    });
    const first = await openSocket(proxied.url, from("203.0.113.1"));
    expect((await rawUpgrade(proxied.url, { "x-forwarded-for": "203.0.113.1" })).status).toBe(429);
    // Another address behind the same proxy still gets in.
    const other = await openSocket(proxied.url, from("203.0.113.2"));
    for (const client of [first, other]) client.close();
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
    const extra = await openSocket(url, { token });
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
    // Each replica delivered exactly one copy to its socket: a later gift (alerts of one room
    // arrive in order) shows that nothing else was on its way.
    const marker = await call(url, "POST", "/api/gifts/send", {
      token: viewer,
      body: { roomId, giftId: "rose", count: 3, idempotencyKey: crypto.randomUUID() },
    });
    expect(marker.status).toBe(200);
    for (const client of [a, b]) {
      await client.next((m) => m.type === "gift.sent" && m.data.count === 3);
      expect(client.messages.filter((m) => m.type === "gift.sent" && m.data.count === 2)).toHaveLength(1);
    }
    a.close();
    b.close();
  });

  it("acknowledges no subscription and is not ready while its feeds are down, and misses no alert meanwhile", async () => {
    // The replica reaches NATS through a proxy the test cuts: its feeds stop being live while
    // the gateway itself keeps serving sockets.
    await using proxy = await FaultProxy.start(h.env.natsUrl);
    const ops = await h.env.connectNats();
    const jsm = await jetstreamManager(ops);
    const giftStream = h.gateway.bus.names.stream("GIFT");
    const giftFeeds = async () =>
      (await jsm.consumers.list(giftStream).next())
        .filter((consumer) => consumer.config.filter_subject?.endsWith(".gift.gift.sent"))
        .map((consumer) => consumer.name);
    const others = await giftFeeds();
    const replica = await h.extraGateway({ NATS_URL: proxy.url(h.env.natsUrl), WS_FEED_WAIT_MS: "200" });
    // Stopped before the proxy goes: cut off from NATS, it would wait out every timeout to stop.
    await using _replica = { [Symbol.asyncDispose]: () => replica.close() };
    const replicaFeeds = (await giftFeeds()).filter((name) => !others.includes(name));
    expect(replicaFeeds).toHaveLength(1);
    const [a, b] = [await signedIn(viewer), await signedIn(host, replica.url)];
    await subscribed(a, `room:${roomId}`);
    await subscribed(b, `room:${roomId}`);

    proxy.cut();
    await waitFor(async () => (await call(replica.url, "GET", "/readyz")).status === 503, {
      what: "the replica to say it is not ready while its feeds are down",
    });
    b.send({ op: "subscribe", channel: "room:later", id: "while-down" });
    expect(await b.next((m) => m.id === "while-down")).toMatchObject({
      type: "error",
      code: "unavailable",
      op: "subscribe",
    });
    // The server drops the consumer of a replica that stays away (after 60 s), and a replica
    // that has not seen one event yet must still resume where its consumer began.
    for (const name of replicaFeeds) await jsm.consumers.delete(giftStream, name);
    const sent = await call(url, "POST", "/api/gifts/send", {
      token: viewer,
      body: { roomId, giftId: "rose", count: 4, idempotencyKey: crypto.randomUUID() },
    });
    expect(sent.status).toBe(200);
    // The other gateway's socket has it: the alert is in the stream before the replica is back.
    await a.next((m) => m.type === "gift.sent" && m.data.sendId === sent.body.gift.id);

    proxy.restore();
    await waitFor(async () => (await call(replica.url, "GET", "/readyz")).status === 200, {
      what: "the replica to be ready once its feeds are live again",
    });
    await subscribed(b, "room:later");
    const missed = await b.next((m) => m.type === "gift.sent" && m.data.sendId === sent.body.gift.id);
    expect(missed.data).toMatchObject({ count: 4 });
    a.close();
    b.close();
    await ops.close();
  });

  it("terminates a peer that stops answering pings", async () => {
    const before = h.gateway.hub.stats().connections;
    const dead = await openSocket(url, { token: viewer, client: { autoPong: false } });
    await dead.next((m) => m.type === "authenticated");
    const started = Date.now();
    expect((await dead.closed).code).toBe(1006);
    expect(Date.now() - started).toBeLessThan(2_000);
    await waitFor(() => h.gateway.hub.stats().connections === before);
  });

  it("drops a slow reader's updates and then the reader, while a fast one gets every update", async () => {
    // A PK channel: one frame per message (a room's would be coalesced and bounded, 0033).
    const channel = "pk:flood";
    const fast = await signedIn(viewer);
    const slow = await signedIn(host);
    await subscribed(fast, channel);
    await subscribed(slow, channel);
    // The slow client stops reading from its socket; the kernel buffers fill, then the gateway's.
    (slow.socket as unknown as { _socket: Socket })._socket.pause();
    const frames = 200;
    const pad = "x".repeat(32 * 1024);
    const sentBefore = await messagesSent("pk");
    for (let i = 0; i < frames; i++) {
      h.gateway.hub.publish(
        { kind: "pk", id: "flood", type: "pk.scored", data: { i, pad } },
        `e${i}`,
        new Date(),
      );
      await new Promise((resolve) => setTimeout(resolve, 2));
    }
    await waitFor(() => fast.messages.filter((m) => m.type === "pk.scored").length === frames);
    expect((await messagesSent("pk")) - sentBefore).toBeLessThan(2 * frames);
    // Over the limit for longer than the grace period: closed, then terminated.
    await waitFor(() => h.gateway.hub.stats().connections === 1, { timeoutMs: 5_000 });
    const order = fast.messages.filter((m) => m.type === "pk.scored").map((m) => m.data.i);
    expect(order).toEqual([...Array(frames).keys()]);
    fast.close();
  });
});
