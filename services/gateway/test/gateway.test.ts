// The gateway end to end against the real wallet, gift service, Postgres and NATS: tokens from
// the development endpoint, a host going live, a gift sent over REST while a WebSocket client
// in the room sees the donation alert, and the host's balance showing the credit. Then the
// authorization rules: other users' data, admin routes, forged and expired tokens, and tokens
// signed with a leaked service key.
import { readFile } from "node:fs/promises";
import { fromBinary } from "@bufbuild/protobuf";
import {
  createUserTokenSigner,
  generatePrivateJwk,
  importSigningKey,
  issuerKeyId,
  readSigningKey,
} from "@ovation/auth";
import { TransferCommittedSchema } from "@ovation/proto/gen/ovation/wallet/v1/events_pb.ts";
import { waitFor } from "@ovation/testkit";
import { freePort } from "@ovation/testkit/bench";
import { decodeProtectedHeader, SignJWT } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { call, type GatewayHarness, openSocket, type Reply, startGatewayHarness } from "./helpers.ts";

let h: GatewayHarness;
let url: string;
let adminToken: string;
let hostToken: string;
let viewerToken: string;
let roomId: string;
const key = () => crypto.randomUUID();

async function devToken(userId: string, roles: string[], vipLevel = 0): Promise<string> {
  const reply = await call(url, "POST", "/api/auth/token", { body: { userId, roles, vipLevel } });
  expect(reply.status).toBe(200);
  return reply.body.token;
}

const coins = (reply: Reply): bigint =>
  BigInt(reply.body.balances.find((b: { asset: string }) => b.asset === "COIN")?.amount ?? "0");

beforeAll(async () => {
  h = await startGatewayHarness();
  url = h.gateway.url;
  adminToken = await devToken("root", ["admin"]);
  hostToken = await devToken("hana", ["user", "host"]);
  viewerToken = await devToken("vic", ["user"]);
  const created = await call(url, "POST", "/api/admin/gifts", {
    token: adminToken,
    body: { gift: { id: "rose", name: "Rose", price: "10", pkPoints: "10", animationKey: "rose" } },
  });
  expect(created.status).toBe(200);
  const minted = await call(url, "POST", "/api/admin/wallet/mint", {
    token: adminToken,
    body: { userId: "vic", money: { asset: "COIN", amount: "1000" }, idempotencyKey: key() },
  });
  expect(minted.status).toBe(200);
});
afterAll(() => h?.close());

describe("gateway end to end", () => {
  it("a host goes live, a viewer gifts over REST, the room's socket sees the alert and the host is credited", async () => {
    const live = await call(url, "POST", "/api/rooms", { token: hostToken, body: { title: "late show" } });
    expect(live.status).toBe(200);
    roomId = live.body.room.id;
    expect(live.body.room.status).toBe("ROOM_STATUS_LIVE");

    const watcher = await openSocket(url, { token: await devToken("wanda", ["user"]) });
    await watcher.next((m) => m.type === "authenticated");
    watcher.send({ op: "subscribe", channel: `room:${roomId}`, id: 1 });
    await watcher.next((m) => m.type === "subscribed" && m.id === 1);
    const own = await openSocket(url);
    own.send({ op: "auth", token: viewerToken });
    await own.next((m) => m.type === "authenticated" && m.userId === "vic");
    own.send({ op: "subscribe", channel: "user" });
    await own.next((m) => m.type === "subscribed" && m.channel === "user");

    const sent = await call(url, "POST", "/api/gifts/send", {
      token: viewerToken,
      body: { roomId, giftId: "rose", count: 3, idempotencyKey: key() },
    });
    expect(sent.status).toBe(200);
    expect(sent.body.balance).toBe("970");
    expect(sent.body.gift.combo).toBe(1);

    const alert = await watcher.next((m) => m.channel === `room:${roomId}` && m.type === "gift.sent");
    expect(alert.data).toMatchObject({
      senderId: "vic",
      hostId: "hana",
      giftId: "rose",
      count: 3,
      combo: 1,
      total: "30",
    });
    expect(Date.parse(alert.ts)).not.toBeNaN();
    const debited = await own.next((m) => m.channel === "user" && m.type === "wallet.debited");
    expect(debited.data).toMatchObject({ asset: "COIN", amount: "30" });

    // 70% of 30 coins goes to the host (WALLET_HOST_SHARE_BPS default), asynchronously.
    await waitFor(async () => coins(await call(url, "GET", "/api/wallet", { token: hostToken })) === 21n);
    expect(coins(await call(url, "GET", "/api/wallet", { token: viewerToken }))).toBe(970n);
    const history = await call(url, "GET", "/api/gifts/history?direction=sent", { token: viewerToken });
    expect(history.status).toBe(200);
    await waitFor(async () => {
      const board = await call(url, "GET", `/api/rooms/${roomId}/leaderboard`);
      return board.body.entries?.[0]?.userId === "vic";
    });
    const hosts = await call(url, "GET", "/api/leaderboards/hosts?period=day");
    expect(hosts.status).toBe(200);
    const metrics = await (await fetch(`${h.wallet.server.url}/metrics`)).text();
    expect(metrics).toMatch(/ovation_outbox_published_total\{service="wallet"\} [1-9]/);
    expect(metrics).toMatch(
      /ovation_events_processed_total\{consumer="wallet-host-credit",outcome="processed"\} [1-9]/,
    );
    expect(metrics).toMatch(/ovation_gateway_ws_messages_sent_total\{kind="room"\} [1-9]/);
    watcher.close();
    own.close();
  });

  it("takes the idempotency key from the Idempotency-Key header: a retried send debits once", async () => {
    const header = key();
    const send = () =>
      call(url, "POST", "/api/gifts/send", {
        token: viewerToken,
        body: { roomId, giftId: "rose", count: 1 },
        headers: { "idempotency-key": header },
      });
    const before = coins(await call(url, "GET", "/api/wallet", { token: viewerToken }));
    const [first, second] = [await send(), await send()];
    expect(first.status).toBe(200);
    expect(second.status).toBe(200);
    expect(second.body.gift.id).toBe(first.body.gift.id);
    expect(coins(await call(url, "GET", "/api/wallet", { token: viewerToken }))).toBe(before - 10n);
    const clash = await call(url, "POST", "/api/gifts/send", {
      token: viewerToken,
      body: { roomId, giftId: "rose", count: 1, idempotencyKey: key() },
      headers: { "idempotency-key": header },
    });
    expect(clash.status).toBe(400);
  });

  it("carries the client's trace context from REST to the gift event and on to the host credit's event", async () => {
    const traceId = crypto.randomUUID().replaceAll("-", "");
    // Earlier tests' gifts are credited first, so the last events on each subject are this gift's.
    const uncredited = async () => {
      const [row] = await h.wallet.orm.em.fork().execute<{ n: number }[]>(
        `select count(*)::int as n from wallet.transfers t where t.kind = 5 and not exists
           (select 1 from wallet.gift_settlements s where s.gift_transfer_id = t.id)`,
      );
      return row!.n;
    };
    await waitFor(async () => (await uncredited()) === 0);
    const sent = await call(url, "POST", "/api/gifts/send", {
      token: viewerToken,
      body: { roomId, giftId: "rose", count: 1, idempotencyKey: key() },
      headers: { traceparent: `00-${traceId}-00f067aa0ba902b7-01` },
    });
    expect(sent.status).toBe(200);
    await waitFor(async () => (await uncredited()) === 0);
    // The credit's events committed with it; once the wallet's outbox is empty they are published.
    await waitFor(
      async () => (await h.wallet.orm.em.fork().execute("select 1 from wallet.outbox")).length === 0,
      { what: "the wallet's outbox to drain" },
    );
    const { bus } = h.wallet;
    const last = (stream: string, subject: string) =>
      bus.jsm.streams.getMessage(bus.names.stream(stream), { last_by_subj: bus.names.subject(subject) });
    const giftSent = (await last("GIFT", "gift.gift.sent"))!;
    expect(giftSent.header.get("Ovation-Event-Id")).toBe(sent.body.gift.id);
    // The platform's share of the credit leaves gifts-in-transit as a REVENUE transfer on
    // wallet.transfer.committed (the host's share is a credit event, on wallet.transfer.credit.earned).
    const credit = await waitFor(async () => {
      const message = await last("WALLET", "wallet.transfer.committed");
      if (message === null) return undefined;
      const transfer = fromBinary(TransferCommittedSchema, message.data).transfer;
      return transfer?.debitOwner === "system:gifts-in-transit" ? message : undefined;
    });
    for (const message of [giftSent, credit]) {
      const traceparent = message.header.get("traceparent");
      expect(traceparent).toMatch(new RegExp(`^00-${traceId}-[0-9a-f]{16}-01$`));
      expect(traceparent).not.toContain("00f067aa0ba902b7");
    }
  });

  it("maps service errors to HTTP statuses with a {code, message, details} body", async () => {
    const poor = await devToken("pat", ["user"]);
    const broke = await call(url, "POST", "/api/gifts/send", {
      token: poor,
      body: { roomId, giftId: "rose", count: 1, idempotencyKey: key() },
    });
    expect(broke.status).toBe(412);
    expect(broke.body).toMatchObject({ code: "failed_precondition", details: expect.any(Array) });
    expect(broke.body.message).toMatch(/balance/i);
    const missing = await call(url, "GET", `/api/rooms/${crypto.randomUUID()}`);
    expect(missing.status).toBe(404);
    expect(missing.body.code).toBe("not_found");
    const anonymousSend = await call(url, "POST", "/api/gifts/send", {
      body: { roomId, giftId: "rose", count: 1, idempotencyKey: key() },
    });
    expect(anonymousSend.status).toBe(401);
  });

  it("serves public routes without a token, the OpenAPI document and the docs page", async () => {
    const gifts = await call(url, "GET", "/api/gifts");
    expect(gifts.status).toBe(200);
    expect(gifts.body.gifts.map((g: { id: string }) => g.id)).toContain("rose");
    const openApi = await call(url, "GET", "/api/openapi.json");
    expect(openApi.body.openapi).toBe("3.1.0");
    for (const [path, method] of [
      ["/api/gifts/send", "post"],
      ["/api/wallet", "get"],
      ["/api/rooms/{roomId}/end", "post"],
      ["/api/admin/dlq/{id}", "delete"],
      ["/api/auth/token", "post"],
      ["/api/notifications", "get"],
    ] as const) {
      expect(openApi.body.paths[path]?.[method], `${method} ${path}`).toBeDefined();
    }
    // Every route the gateway serves is in the document, and nothing else: the annotated
    // routes, and those the gateway answers itself: the dev-token endpoint, the notifications,
    // consumer lag, and the refused outbox rows with their retry.
    const documented = Object.values(openApi.body.paths).reduce(
      (sum: number, operations) => sum + Object.keys(operations as object).length,
      0,
    );
    expect(documented).toBe(h.gateway.routes.routes.length + 5);
    const docs = await fetch(`${url}/docs`);
    expect(docs.status).toBe(200);
    expect(await docs.text()).toContain("swagger-ui");
    expect((await fetch(`${url}/docs/swagger-ui-bundle.js`)).status).toBe(200);
    expect((await fetch(`${url}/docs/../package.json`)).status).toBe(404);
    expect((await call(url, "GET", "/healthz")).status).toBe(200);
    const ready = await call(url, "GET", "/readyz");
    expect(ready.body).toEqual({ status: "ready", upstreams: { wallet: true, gift: true } });
  });
});

describe("authorization", () => {
  const viewerCoins = async () => coins(await call(url, "GET", "/api/wallet", { token: viewerToken }));

  it("refuses another user's wallet and history", async () => {
    const other = await call(url, "GET", "/api/wallet?userId=hana", { token: viewerToken });
    expect(other.status).toBe(403);
    expect(other.body.code).toBe("permission_denied");
    const theirs = await call(url, "GET", "/api/wallet/transactions?userId=hana", { token: viewerToken });
    expect(theirs.status).toBe(403);
    const admin = await call(url, "GET", "/api/wallet?userId=hana", { token: adminToken });
    expect(admin.status).toBe(200);
  });

  it("refuses admin routes without the admin role, and nothing changes", async () => {
    const before = await viewerCoins();
    const mint = await call(url, "POST", "/api/admin/wallet/mint", {
      token: viewerToken,
      body: { userId: "vic", money: { asset: "COIN", amount: "1000000" }, idempotencyKey: key() },
    });
    expect(mint.status).toBe(403);
    expect((await call(url, "GET", "/api/admin/dlq", { token: hostToken })).status).toBe(403);
    expect((await call(url, "GET", "/api/admin/dlq")).status).toBe(401);
    const gift = await call(url, "POST", "/api/admin/gifts", {
      token: hostToken,
      body: { gift: { id: "free", name: "Free", price: "1", animationKey: "x" } },
    });
    expect(gift.status).toBe(403);
    expect(await viewerCoins()).toBe(before);
    expect((await call(url, "GET", "/api/admin/dlq", { token: adminToken })).status).toBe(200);
  });

  it("refuses forged, expired and malformed tokens with 401, and nothing changes", async () => {
    const before = await viewerCoins();
    const settings = { issuer: "ovation", audience: "ovation" };
    // A key of the right shape that nobody published, even under the published issuer's id.
    const strangerJwk = generatePrivateJwk(issuerKeyId("stranger"));
    const issuerJwk = JSON.parse(await readFile(h.env.keys.issuer, "utf8"));
    const forger = createUserTokenSigner(await importSigningKey(strangerJwk), settings);
    const impostor = createUserTokenSigner(
      await importSigningKey({ ...strangerJwk, kid: issuerJwk.kid }),
      settings,
    );
    const expiredSigner = createUserTokenSigner(await readSigningKey(h.env.keys.issuer), settings);
    const now = Math.floor(Date.now() / 1000);
    const adminClaims = { sub: "root", iss: "ovation", aud: "ovation", roles: ["admin"], exp: now + 600 };
    // The gift service's private key, as an attacker who broke into the gift process has it.
    const gift = await readSigningKey(h.env.keys.service("gift"));
    const tokens = {
      forged: await forger({ subject: "root", roles: ["admin"] }),
      impostor: await impostor({ subject: "root", roles: ["admin"] }),
      expired: await expiredSigner({ subject: "root", roles: ["admin"], ttlSeconds: -60 }),
      hs256: await new SignJWT(adminClaims)
        .setProtectedHeader({ alg: "HS256", kid: issuerJwk.kid })
        .sign(new TextEncoder().encode(issuerJwk.x)),
      leakedServiceKeyAsAdmin: await new SignJWT({ ...adminClaims, iat: now })
        .setProtectedHeader({ alg: "EdDSA", kid: gift.kid })
        .sign(gift.key),
      leakedServiceKeyAsUser: await new SignJWT({ ...adminClaims, iat: now, sub: "vic", roles: ["user"] })
        .setProtectedHeader({ alg: "EdDSA", kid: gift.kid })
        .sign(gift.key),
      garbage: "not.a.jwt",
      huge: "a".repeat(5000),
    };
    for (const [name, token] of Object.entries(tokens)) {
      const mint = await call(url, "POST", "/api/admin/wallet/mint", {
        token,
        body: { userId: "vic", money: { asset: "COIN", amount: "5" }, idempotencyKey: key() },
      });
      expect(mint.status, name).toBe(401);
      expect(mint.body.code, name).toBe("unauthenticated");
      const socket = await openSocket(url, { token });
      expect((await socket.closed).code, name).toBe(4401);
    }
    const basic = await call(url, "GET", "/api/wallet", { headers: { authorization: "Basic cm9vdDpyb290" } });
    expect(basic.status).toBe(401);
    expect(await viewerCoins()).toBe(before);
  });

  it("refuses every service's own token on REST (403) and WebSocket (4401): service identities belong inside", async () => {
    const before = await viewerCoins();
    for (const service of ["wallet", "gift", "pk", "discount", "order", "gateway", "card"]) {
      const token = await h.env.serviceToken(service);
      const balances = await call(url, "GET", "/api/wallet?userId=vic", { token });
      expect([service, balances.status, balances.body.code]).toEqual([service, 403, "permission_denied"]);
      expect((await call(url, "GET", "/api/wallet/transactions?userId=vic", { token })).status, service).toBe(
        403,
      );
      expect((await call(url, "POST", "/api/rooms", { token, body: {} })).status, service).toBe(403);
      const send = await call(url, "POST", "/api/gifts/send", {
        token,
        body: { roomId: crypto.randomUUID(), giftId: "rose", count: 1, idempotencyKey: key() },
      });
      expect(send.status, service).toBe(403);
      const subprotocol = await openSocket(url, { token });
      expect((await subprotocol.closed).code, service).toBe(4401);
      const frame = await openSocket(url);
      frame.send({ op: "auth", token });
      expect((await frame.closed).code, service).toBe(4401);
    }
    expect(await viewerCoins()).toBe(before);
  });

  it("keeps the development token endpoint off unless configured, and never mints the service role", async () => {
    const production = await h.extraGateway({ OVATION_DEV_TOKENS: "false" });
    const off = await call(production.url, "POST", "/api/auth/token", {
      body: { userId: "eve", roles: ["admin"] },
    });
    expect(off.status).toBe(404);
    const service = await call(url, "POST", "/api/auth/token", {
      body: { userId: "eve", roles: ["service"] },
    });
    expect(service.status).toBe(400);
    const mixed = await call(url, "POST", "/api/auth/token", {
      body: { userId: "gift", roles: ["admin", "service"] },
    });
    expect(mixed.status).toBe(400);
    // Dev tokens are signed with the issuer key, never a service key, and the production
    // gateway verifies them with public keys alone.
    const issuerKid = JSON.parse(await readFile(h.env.keys.issuer, "utf8")).kid;
    expect(decodeProtectedHeader(adminToken).kid).toBe(issuerKid);
    expect((await call(production.url, "GET", "/api/wallet", { token: viewerToken })).status).toBe(200);
  });

  it("answers 503, not 401, while the identity provider's key set is unreachable", async () => {
    // A port that was free a moment ago: nothing answers there.
    const withProvider = await h.extraGateway({ JWKS_URL: `http://127.0.0.1:${await freePort()}/jwks.json` });
    const provider = await importSigningKey(generatePrivateJwk("provider-1"));
    const token = await createUserTokenSigner(provider, { issuer: "ovation", audience: "ovation" })({
      subject: "vic",
      roles: ["user"],
    });
    const reply = await call(withProvider.url, "GET", "/api/wallet", { token });
    expect(reply.status).toBe(503);
    expect(reply.body.code).toBe("unavailable");
    expect(reply.headers.get("retry-after")).toBe("5");
    expect((await call(withProvider.url, "GET", "/api/wallet", { token: viewerToken })).status).toBe(200);
  });

  it("a gateway without dev tokens refuses to start holding the issuer key", async () => {
    await expect(
      h.extraGateway({ OVATION_DEV_TOKENS: "false", TOKEN_ISSUER_KEY_FILE: h.env.keys.issuer }),
    ).rejects.toThrow("TOKEN_ISSUER_KEY_FILE: invalid: only with OVATION_DEV_TOKENS=true");
  });
});
