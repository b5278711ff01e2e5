// The client against the whole stack (every service a child process, as `./ov up` runs them, dev
// tokens on): the generated client covers exactly what the gateway serves; typed REST calls
// mint tokens, fund a viewer, open a room, send a gift and read the room back; the room
// channel delivers that gift, typed; and after the connection is cut (the test kit's fault
// proxy between the client and the gateway) the client reconnects with growing delays and
// resubscribes by itself, also when the peer goes silent without closing.
import { readFileSync } from "node:fs";
import { FaultProxy, type TestEnvironment, testEnvironment, waitFor } from "@ovation/testkit";
import { type Stack, startStack } from "@ovation/testkit/bench";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  ApiError,
  type ChannelError,
  type ChannelMessage,
  type ConnectionStatus,
  createOvationClient,
  type MessageOf,
  type OvationClient,
  ok,
  operations,
} from "../src/index.ts";

let env: TestEnvironment;
let stack: Stack;
let gateway: string;
let roomId: string;
const tokens = { admin: "", host: "", viewer: "" };
const opened: OvationClient[] = [];
/** Seven Node processes start at once on two cores: under a loaded run that takes most of a minute. */
const stackStartTimeoutMs = 180_000;
/** Fast reconnects, so outages in this file last a fraction of a second. */
const reconnect = { initialDelayMs: 50, maxDelayMs: 400 };

function client(token: () => string, baseUrl = gateway, heartbeatIntervalMs = 5_000): OvationClient {
  const created = createOvationClient({ baseUrl, token, reconnect, heartbeatIntervalMs });
  opened.push(created);
  return created;
}

/** Sends `count` roses from the viewer to the room, over the typed client; returns the answer. */
async function sendRoses(count: number) {
  const viewer = client(() => tokens.viewer);
  return ok(
    viewer.api.POST("/api/gifts/send", {
      body: { roomId, giftId: "rose", count, idempotencyKey: crypto.randomUUID() },
    }),
  );
}

/** Gifts received on a room subscription, with the room channel's message type. */
function collect(into: MessageOf<`room:${string}`>[]) {
  return (message: MessageOf<`room:${string}`>) => into.push(message);
}

const giftTotals = (messages: readonly ChannelMessage[]) =>
  messages.flatMap((message) => (message.type === "gift.sent" ? [message.data.total] : []));

beforeAll(async () => {
  env = await testEnvironment();
  // Small pools: seven processes share Postgres with the other test files of the run.
  stack = await startStack(env, { env: { OVATION_DEV_TOKENS: "true", DATABASE_POOL_MAX: "3" } });
  gateway = stack.service("gateway").url;
  await waitFor(async () => (await fetch(`${gateway}/readyz`)).ok, { what: "the gateway to be ready" });
  const anonymous = createOvationClient({ baseUrl: gateway });
  const devToken = async (userId: string, roles: ("user" | "host" | "admin")[]) =>
    (await ok(anonymous.api.POST("/api/auth/token", { body: { userId, roles } }))).token!;
  tokens.admin = await devToken("root", ["admin"]);
  tokens.host = await devToken("hana", ["user", "host"]);
  tokens.viewer = await devToken("vic", ["user"]);
  const admin = client(() => tokens.admin);
  await ok(
    admin.api.POST("/api/admin/gifts", {
      body: { gift: { id: "rose", name: "Rose", price: "10", pkPoints: "10", animationKey: "rose" } },
    }),
  );
  await ok(
    admin.api.POST("/api/admin/wallet/mint", {
      body: { userId: "vic", money: { asset: "COIN", amount: "10000" }, reference: "welcome" },
      params: { header: { "Idempotency-Key": "mint-vic" } },
    }),
  );
  const host = client(() => tokens.host);
  roomId = (await ok(host.api.POST("/api/rooms", { body: { title: "late show" } }))).room!.id!;
}, stackStartTimeoutMs);

afterAll(async () => {
  await Promise.all(opened.map((created) => created.close()));
  await stack?.[Symbol.asyncDispose]();
  await env?.[Symbol.asyncDispose]();
});

describe("generated client", () => {
  it("covers every route the gateway serves, from the very document it serves", async () => {
    const served = (await (await fetch(`${gateway}/api/openapi.json`)).json()) as {
      paths: Record<string, Record<string, unknown>>;
    };
    const generatedDocument = JSON.parse(
      readFileSync(new URL("../src/gen/openapi.json", import.meta.url), "utf8"),
    );
    // The client was generated from exactly this document (schemas and socket section included)...
    expect(served).toEqual(generatedDocument);
    // ...and every operation in it is a typed call (routes.ts type-checks against `paths`).
    const servedOperations = Object.entries(served.paths).flatMap(([path, item]) =>
      Object.keys(item).map((method) => `${method.toUpperCase()} ${path}`),
    );
    const clientOperations = operations.map(({ method, path }) => `${method.toUpperCase()} ${path}`);
    expect(clientOperations.sort()).toEqual(servedOperations.sort());
    expect(clientOperations.length).toBeGreaterThan(40);
  });
});

describe("typed REST calls", () => {
  it("send a gift and read the room and the balance back", async () => {
    const viewer = client(() => tokens.viewer);
    const sent = await sendRoses(3);
    expect(sent.gift).toMatchObject({ roomId, giftId: "rose", count: 3, total: "30" });
    const { room } = await ok(viewer.api.GET("/api/rooms/{roomId}", { params: { path: { roomId } } }));
    expect(room).toMatchObject({ id: roomId, hostId: "hana", status: "ROOM_STATUS_LIVE" });
    const { balances } = await ok(viewer.api.GET("/api/wallet"));
    expect(balances).toContainEqual({ asset: "COIN", amount: sent.balance });
  });

  it("turn refusals into values, or into an ApiError with the gateway's code", async () => {
    const anonymous = createOvationClient({ baseUrl: gateway });
    const refused = await anonymous.api.GET("/api/wallet");
    expect(refused.response.status).toBe(401);
    expect(refused.error?.code).toBe("unauthenticated");
    const missing = await ok(
      anonymous.api.GET("/api/rooms/{roomId}", { params: { path: { roomId: crypto.randomUUID() } } }),
    ).catch((error: unknown) => error);
    expect(missing).toBeInstanceOf(ApiError);
    expect(missing).toMatchObject({ status: 404, code: "not_found" });
  });
});

describe("channels", () => {
  it("deliver the gift on the room channel and the debit on the sender's own channel, typed", async () => {
    const viewer = client(() => tokens.viewer);
    const room: MessageOf<`room:${string}`>[] = [];
    const own: MessageOf<"user">[] = [];
    await viewer.channels.subscribe(`room:${roomId}`, collect(room)).ready;
    await viewer.channels.subscribe("user", (message) => own.push(message)).ready;
    const sent = await sendRoses(2);
    await waitFor(() => giftTotals(room).includes("20"), { what: "the gift on the room channel" });
    const gift = room.find((message) => message.type === "gift.sent");
    expect(gift).toMatchObject({ channel: `room:${roomId}`, data: { sendId: sent.gift!.id, count: 2 } });
    await waitFor(() =>
      own.some((message) => message.type === "wallet.debited" && message.data.amount === "20"),
    );
  });

  it("refuse an unknown channel and a forged token with typed errors", async () => {
    const viewer = client(() => tokens.viewer);
    // @ts-expect-error: not a channel name the gateway knows, so it does not compile either.
    const unknown = viewer.channels.subscribe("lobby:1", () => {});
    await expect(unknown.ready).rejects.toMatchObject({ code: "invalid_argument", channel: "lobby:1" });

    const forged = createOvationClient({ baseUrl: gateway, token: "not.a.jwt", reconnect });
    opened.push(forged);
    const statuses: ConnectionStatus[] = [];
    forged.channels.on("status", (status) => statuses.push(status));
    const refused = forged.channels.subscribe(`room:${roomId}`, () => {});
    await expect(refused.ready).rejects.toMatchObject({ code: "unauthenticated" });
    // A fixed token the gateway refused is not tried again and again.
    expect(statuses).toEqual(["connecting", "closed"]);
  });

  it("reconnect after a cut with growing delays and resubscribe without being asked", async () => {
    await using proxy = await FaultProxy.start(gateway);
    const attempts: number[] = [];
    const viewer = createOvationClient({
      baseUrl: proxy.url(gateway),
      token: () => tokens.viewer,
      reconnect,
      WebSocket: class extends WebSocket {
        constructor(url: string, protocols: string[]) {
          super(url, protocols);
          attempts.push(performance.now());
        }
      },
    });
    opened.push(viewer);
    const statuses: ConnectionStatus[] = [];
    viewer.channels.on("status", (status) => statuses.push(status));
    const room: MessageOf<`room:${string}`>[] = [];
    let confirmations = 0;
    const subscription = viewer.channels.subscribe(`room:${roomId}`, collect(room), {
      onSubscribed: () => confirmations++,
    });
    await subscription.ready;
    expect(confirmations).toBe(1);

    proxy.cut();
    // Refused again and again while the outage lasts: each attempt waits longer than the last.
    await waitFor(() => attempts.length >= 6, { what: "five reconnect attempts" });
    const gaps = attempts.slice(1).map((at, index) => at - attempts[index]!);
    // The first gap includes the time before the cut. Reconnect n (from 0) waits at least half
    // its step, min(400, 50 × 2^n) ms; with no backoff these gaps would be a few milliseconds.
    gaps.slice(1).forEach((gap, index) => {
      expect(gap).toBeGreaterThanOrEqual(Math.min(400, 50 * 2 ** (index + 1)) / 2 - 5);
    });
    expect(statuses).toContain("reconnecting");

    proxy.restore();
    await waitFor(() => confirmations === 2, { what: "the subscription confirmed again" });
    expect(viewer.channels.status).toBe("open");
    await sendRoses(4);
    await waitFor(() => giftTotals(room).includes("40"), { what: "a gift after the reconnect" });
  });

  it("replace a socket that went silent without closing (lost replies) once its heartbeat misses", async () => {
    await using proxy = await FaultProxy.start(gateway);
    const viewer = client(() => tokens.viewer, proxy.url(gateway), 200);
    const room: MessageOf<`room:${string}`>[] = [];
    let confirmations = 0;
    await viewer.channels.subscribe(`room:${roomId}`, collect(room), { onSubscribed: () => confirmations++ })
      .ready;
    const acceptedBefore = proxy.accepted;
    // The gateway still hears the client, but nothing it sends arrives: no close, no error.
    proxy.loseReplies();
    await waitFor(() => viewer.channels.status === "reconnecting", { what: "the silence to be noticed" });
    proxy.restore();
    await waitFor(() => confirmations === 2, { what: "the subscription on a new socket" });
    expect(proxy.accepted).toBeGreaterThan(acceptedBefore);
    await sendRoses(5);
    await waitFor(() => giftTotals(room).includes("50"), { what: "a gift on the new socket" });
  });

  it("close cleanly: pending subscriptions are rejected and nothing reconnects", async () => {
    const viewer = client(() => tokens.viewer);
    const errors: ChannelError[] = [];
    viewer.channels.on("error", (error) => errors.push(error));
    const pending = viewer.channels.subscribe(`campaign:nothing-yet`, () => {});
    await viewer.close();
    await expect(pending.ready).rejects.toMatchObject({ code: "closed" });
    expect(viewer.channels.status).toBe("closed");
    expect(() => viewer.channels.subscribe("user", () => {})).toThrow(/closed/);
    expect(errors).toEqual([]);
  });
});
