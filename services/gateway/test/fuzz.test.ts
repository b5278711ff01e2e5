// Hostile input gets a 4xx with the error body, never a 500 and never a change: property-based
// fuzzing (fast-check) of bodies, field types, sizes, paths and headers against the real
// gateway and services; integers that only a lenient parser would read, and duplicate JSON
// keys, in bodies, URLs and WebSocket frames. Then the rate limits, per user and per address.
import http from "node:http";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { call, type GatewayHarness, openSocket, type Reply, startGatewayHarness } from "./helpers.ts";

let h: GatewayHarness;
let url: string;
let viewer: string;
let admin: string;
let roomId: string;
const runs = { numRuns: 150 };

function expectClientError(reply: Reply, what: string): void {
  expect(reply.status, `${what} → ${JSON.stringify(reply.body)}`).toBeGreaterThanOrEqual(400);
  expect(reply.status, `${what} → ${JSON.stringify(reply.body)}`).toBeLessThan(500);
  expect(reply.body, what).toMatchObject({ code: expect.any(String), message: expect.any(String) });
  expect(reply.body.details, what).toBeInstanceOf(Array);
  expect(JSON.stringify(reply.body), what).not.toMatch(/\bat .+\.ts:\d+/);
}

const balance = async () => (await call(url, "GET", "/api/wallet", { token: viewer })).body.balances;

beforeAll(async () => {
  // Limits high enough that fuzzing is not throttled; the limits have their own test below.
  h = await startGatewayHarness({
    RATE_LIMIT_USER_WRITES: "100000",
    RATE_LIMIT_IP_WRITES: "100000",
    RATE_LIMIT_USER_READS: "100000",
    RATE_LIMIT_IP_READS: "100000",
  });
  url = h.gateway.url;
  admin = await h.env.token("root", ["admin"]);
  viewer = await h.env.token("vic", ["user"]);
  const host = await h.env.token("hana", ["user", "host"]);
  await call(url, "POST", "/api/admin/gifts", {
    token: admin,
    body: { gift: { id: "rose", name: "Rose", price: "10", animationKey: "rose" } },
  });
  await call(url, "POST", "/api/admin/wallet/mint", {
    token: admin,
    body: { userId: "vic", money: { asset: "COIN", amount: "100" }, idempotencyKey: crypto.randomUUID() },
  });
  roomId = (await call(url, "POST", "/api/rooms", { token: host, body: {} })).body.room.id;
});
afterAll(() => h?.close());

describe("fuzzing the REST API", () => {
  const writes = [
    "/api/gifts/send",
    "/api/rooms",
    "/api/admin/wallet/mint",
    "/api/admin/gifts",
    "/api/rooms/x/end",
  ];

  it("answers malformed JSON and non-JSON bodies with 400/415", async () => {
    const before = await balance();
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...writes),
        fc.string({ minLength: 1, maxLength: 200 }),
        async (path, text) => {
          fc.pre(!isJson(text));
          expectClientError(await call(url, "POST", path, { token: viewer, raw: text }), `${path} ${text}`);
        },
      ),
      runs,
    );
    for (const [type, raw] of [
      ["text/plain", "{}"],
      ["application/x-www-form-urlencoded", "roomId=1"],
      ["application/json", Buffer.from([0xff, 0xfe, 0x7b, 0x7d])],
    ] as const) {
      const reply = await call(url, "POST", "/api/gifts/send", {
        token: viewer,
        raw,
        headers: { "content-type": type },
      });
      expectClientError(reply, type);
    }
    expect(await balance()).toEqual(before);
  });

  it("answers any JSON value of the wrong shape or type with a 4xx, and changes nothing", async () => {
    const before = await balance();
    const sendLike = fc.record(
      {
        roomId: fc.oneof(fc.constant(roomId), fc.anything()),
        giftId: fc.oneof(fc.constant("rose"), fc.anything()),
        count: fc.oneof(fc.integer(), fc.double(), fc.string(), fc.constant(null), fc.bigInt().map(String)),
        idempotencyKey: fc.oneof(fc.string(), fc.anything()),
        extra: fc.anything(),
      },
      { requiredKeys: [] },
    );
    await fc.assert(
      fc.asyncProperty(fc.oneof(fc.jsonValue(), sendLike), async (body) => {
        // A well-formed send for a valid count would be a real gift: leave those to other tests.
        fc.pre(!isValidSend(body));
        const reply = await call(url, "POST", "/api/gifts/send", { token: viewer, body });
        expectClientError(reply, JSON.stringify(body));
      }),
      runs,
    );
    expect(await balance()).toEqual(before);
  });

  it("answers unknown routes, wrong methods, bad paths and bad query parameters with a 4xx", async () => {
    const segment = fc.oneof(
      fc.webSegment(),
      fc.constantFrom("api", "wallet", "gifts", "rooms", "admin", "%zz", ".."),
    );
    await fc.assert(
      fc.asyncProperty(
        fc.array(segment, { minLength: 1, maxLength: 6 }),
        fc.constantFrom("GET", "POST", "PUT", "PATCH", "DELETE"),
        async (segments, method) => {
          const path = `/api/${segments.join("/")}`;
          const body = method === "GET" ? undefined : {};
          const reply = await call(url, method, path, { token: viewer, body });
          if (reply.status < 400) return; // a real route with harmless input (GET /api/gifts)
          expectClientError(reply, `${method} ${path}`);
        },
      ),
      runs,
    );
    await fc.assert(
      fc.asyncProperty(
        fc.string({ minLength: 1, maxLength: 20 }),
        fc.string({ maxLength: 40 }),
        async (name, value) => {
          const query = new URLSearchParams({ [name]: value }).toString();
          const reply = await call(url, "GET", `/api/leaderboards/hosts?${query}`, { token: viewer });
          if (reply.status === 200) expect(["period", "limit"]).toContain(name);
          else expectClientError(reply, query);
        },
      ),
      runs,
    );
    const wrongMethod = await call(url, "DELETE", "/api/gifts", { token: viewer });
    expect(wrongMethod.status).toBe(405);
    expect(wrongMethod.headers.get("allow")).toBe("GET");
  });

  it("answers request targets that are not URLs (//, //x) with 400 instead of crashing (found by fuzzing)", async () => {
    for (const target of ["//", "//x", "//x/api/gifts"]) {
      const status = await new Promise<number>((resolve, reject) => {
        const request = http.request(`${h.gateway.url}/`, { method: "GET", path: target }, (response) => {
          response.resume();
          resolve(response.statusCode ?? 0);
        });
        request.on("error", reject);
        request.end();
      });
      expect(status, target).toBeGreaterThanOrEqual(400);
      expect(status, target).toBeLessThan(500);
    }
    expect((await call(h.gateway.url, "GET", "/healthz")).status).toBe(200);
  });

  it("refuses oversized bodies with 413 before reading them, and huge headers or URLs with 4xx", async () => {
    const before = await balance();
    const huge = JSON.stringify({
      roomId,
      giftId: "rose",
      count: 1,
      idempotencyKey: "k",
      pad: "x".repeat(70_000),
    });
    const reply = await call(url, "POST", "/api/gifts/send", { token: viewer, raw: huge });
    expect(reply.status).toBe(413);
    expect(reply.body.code).toBe("resource_exhausted");
    const longUrl = await fetch(`${url}/api/gifts?${"a=1&".repeat(5_000)}`);
    expect(longUrl.status).toBeGreaterThanOrEqual(400);
    expect(longUrl.status).toBeLessThan(500);
    expect(await balance()).toEqual(before);
  });
});

describe("strict input", () => {
  const hostileIntegers = ["0x10", "1e3", " 10", "10 ", "+5", "010", "1.0", "", "0b1", "Infinity"];
  const gifts = async () => (await call(url, "GET", "/api/gifts")).body.gifts;

  it("refuses integers given as anything but plain decimal strings, naming the field, and changes nothing", async () => {
    const before = [await balance(), await gifts()];
    const refusals: [string, string, string, unknown][] = [];
    for (const text of hostileIntegers) {
      const key = crypto.randomUUID();
      refusals.push(
        ["POST", "/api/gifts/send", "count", { roomId, giftId: "rose", count: text, idempotencyKey: key }],
        [
          "POST",
          "/api/admin/wallet/mint",
          "money.amount",
          { userId: "vic", money: { asset: "COIN", amount: text }, idempotencyKey: key },
        ],
        [
          "POST",
          "/api/admin/gifts",
          "gift.price",
          { gift: { id: `g${hostileIntegers.indexOf(text)}`, name: "G", price: text, animationKey: "g" } },
        ],
        ["GET", `/api/leaderboards/hosts?limit=${encodeURIComponent(text)}`, "limit", undefined],
        ["GET", `/api/admin/dlq?pageSize=${encodeURIComponent(text)}`, "pageSize", undefined],
      );
      if (text !== "")
        refusals.push(["DELETE", `/api/admin/dlq/${encodeURIComponent(text)}`, "id", undefined]);
    }
    refusals.push(["DELETE", "/api/admin/dlq/-1", "id", undefined]);
    for (const [method, path, field, body] of refusals) {
      const token = path.includes("/admin/") ? admin : viewer;
      const reply = await call(url, method, path, { token, body });
      const what = `${method} ${path} ${JSON.stringify(body)}`;
      expectClientError(reply, what);
      expect(reply.status, what).toBe(400);
      expect(reply.body.message, what).toContain(`field ${field}:`);
    }
    expect([await balance(), await gifts()]).toEqual(before);
    // Plain decimals, as strings or numbers, still work.
    expect((await call(url, "GET", "/api/leaderboards/hosts?limit=10")).status).toBe(200);
    expect((await call(url, "GET", "/api/admin/dlq?pageSize=0", { token: admin })).status).toBe(200);
  });

  it("refuses a duplicate JSON key in a REST body, naming it, and changes nothing", async () => {
    const before = await balance();
    const cases: [string, string, string][] = [
      [
        "/api/admin/wallet/mint",
        `{"userId":"vic","money":{"asset":"COIN","amount":"1","amount":"100000"},"idempotencyKey":"dup-1"}`,
        "money.amount",
      ],
      [
        "/api/admin/wallet/mint",
        `{"userId":"eve","userId":"vic","money":{"asset":"COIN","amount":"5"},"idempotencyKey":"dup-2"}`,
        "userId",
      ],
      [
        "/api/gifts/send",
        `{"roomId":"${roomId}","giftId":"rose","count":1,"c\u006funt":9,"idempotencyKey":"dup-3"}`,
        "count",
      ],
    ];
    for (const [path, raw, key] of cases) {
      const reply = await call(url, "POST", path, { token: path.includes("admin") ? admin : viewer, raw });
      expectClientError(reply, raw);
      expect(reply.status, raw).toBe(400);
      expect(reply.body.message, raw).toContain(`duplicate key ${key}`);
    }
    expect(await balance()).toEqual(before);
  });

  it("refuses a duplicate key in the development token body, so a second roles cannot widen the first", async () => {
    const reply = await call(url, "POST", "/api/auth/token", {
      raw: `{"userId":"eve","roles":["user"],"roles":["admin"]}`,
    });
    expect(reply.status).toBe(400);
    expect(reply.body).toMatchObject({ code: "invalid_argument", message: expect.stringContaining("roles") });
    expect(reply.body.token).toBeUndefined();
  });

  it("refuses a duplicate key in a WebSocket frame: an error when signed in, 4401 before", async () => {
    const client = await openSocket(url);
    client.send({ op: "auth", token: viewer });
    await client.next((m) => m.type === "authenticated");
    client.socket.send(`{"op":"subscribe","channel":"room:a","channel":"user","id":7}`);
    const error = await client.next((m) => m.type === "error");
    expect(error.message).toContain("duplicate key channel");
    client.send({ op: "ping", id: "after" });
    await client.next((m) => m.type === "pong" && m.id === "after");
    expect(client.messages.some((m) => m.type === "subscribed")).toBe(false);
    client.close();

    const fresh = await openSocket(url);
    fresh.socket.send(`{"op":"auth","token":"x","token":${JSON.stringify(viewer)}}`);
    const closed = await fresh.closed;
    expect(closed.code).toBe(4401);
    expect(closed.reason).toContain("duplicate key token");
  });
});

describe("rate limits", () => {
  it("throttles writes per user with 429 and Retry-After, reads count apart", async () => {
    const limited = await h.extraGateway({ RATE_LIMIT_USER_WRITES: "3", RATE_LIMIT_IP_WRITES: "1000" });
    const room = async (token: string) =>
      (await call(limited.url, "POST", "/api/rooms/x/end", { token, body: {} })).status;
    const statuses = [];
    for (let i = 0; i < 5; i++) statuses.push(await room(viewer));
    expect(statuses.slice(0, 3).every((status) => status !== 429)).toBe(true);
    const throttled = await call(limited.url, "POST", "/api/rooms/x/end", { token: viewer, body: {} });
    expect(throttled.status).toBe(429);
    expect(Number(throttled.headers.get("retry-after"))).toBeGreaterThan(0);
    expect(throttled.body.code).toBe("resource_exhausted");
    // Another user is not affected; reads have their own budget.
    expect(await room(await h.env.token("other", ["user"]))).not.toBe(429);
    expect((await call(limited.url, "GET", "/api/wallet", { token: viewer })).status).toBe(200);
  });

  it("throttles reads per user and per client address with 429 and Retry-After, apart from writes", async () => {
    const limited = await h.extraGateway({
      RATE_LIMIT_USER_READS: "3",
      RATE_LIMIT_IP_READS: "1000",
      RATE_LIMIT_USER_WRITES: "1000",
    });
    const read = (token?: string) => call(limited.url, "GET", "/api/wallet", { token });
    const statuses = [];
    for (let i = 0; i < 3; i++) statuses.push((await read(viewer)).status);
    expect(statuses).toEqual([200, 200, 200]);
    const throttled = await read(viewer);
    expect(throttled.status).toBe(429);
    expect(throttled.body.code).toBe("resource_exhausted");
    expect(Number(throttled.headers.get("retry-after"))).toBeGreaterThan(0);
    expect((await read(await h.env.token("other", ["user"]))).status).toBe(200);
    const write = await call(limited.url, "POST", "/api/rooms/x/end", { token: viewer, body: {} });
    expect(write.status).not.toBe(429);

    const byAddress = await h.extraGateway({ RATE_LIMIT_IP_READS: "4" });
    const anonymous = [];
    for (let i = 0; i < 6; i++) anonymous.push((await call(byAddress.url, "GET", "/api/gifts")).status);
    expect(anonymous).toEqual([200, 200, 200, 200, 429, 429]);
  });

  it("throttles writes per client address, even with forged tokens", async () => {
    const limited = await h.extraGateway({ RATE_LIMIT_USER_WRITES: "1000", RATE_LIMIT_IP_WRITES: "4" });
    const statuses = [];
    for (let i = 0; i < 6; i++) {
      statuses.push(
        (await call(limited.url, "POST", "/api/gifts/send", { token: `forged${i}`, body: {} })).status,
      );
    }
    expect(statuses.slice(0, 4)).toEqual([401, 401, 401, 401]);
    expect(statuses.slice(4)).toEqual([429, 429]);
  });
});

function isJson(text: string): boolean {
  try {
    JSON.parse(text);
    return true;
  } catch {
    return false;
  }
}

function isValidSend(body: unknown): boolean {
  if (typeof body !== "object" || body === null) return false;
  const send = body as Record<string, unknown>;
  return (
    send.roomId === roomId &&
    send.giftId === "rose" &&
    typeof send.idempotencyKey === "string" &&
    Object.keys(send).every((k) => ["roomId", "giftId", "count", "idempotencyKey"].includes(k))
  );
}
