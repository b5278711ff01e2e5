// Proves the gateway's answers at its edges, read the way a client reads them: a body over the
// limit is a 413 the client can read even though it keeps sending, an oversized header block a
// 431 (not a reset connection), a control character in a path or body field a 400 (not a 503 to
// retry for ever), a Postgres outage a quick 503 on GET /api/notifications and /readyz, and an
// upstream too slow for its health check but answering its calls still healthy (and one that is
// down reported, without taking the gateway out of the balancer).
import net from "node:net";
import { FaultProxy, waitFor } from "@ovation/testkit";
import { startWallet } from "@ovation/wallet";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { call, type GatewayHarness, startGatewayHarness } from "./helpers.ts";

let h: GatewayHarness;
beforeAll(async () => {
  h = await startGatewayHarness();
});
afterAll(() => h?.close());

interface RawAnswer {
  /** The status line's code, or what broke before one could be read. */
  status: number | string;
  /** How the connection ended after the answer: a clean close, or a reset that loses data. */
  ended?: "closed" | "reset";
}

/**
 * A client such as curl: writes the request head, then the whole body, and only then reads the
 * answer. A write that fails (the server reset the connection) loses the answer, as it does for
 * such a client.
 */
function rawRequest(
  head: string,
  body: Buffer = Buffer.alloc(0),
  chunkBytes = body.length,
): Promise<RawAnswer> {
  const { port } = new URL(h.gateway.url);
  return new Promise((resolve) => {
    const socket = net.connect(Number(port), "127.0.0.1");
    socket.pause();
    const chunks: Buffer[] = [];
    let written = false;
    let settled = false;
    const statusOf = () => /^HTTP\/1\.1 (\d{3})/.exec(Buffer.concat(chunks).toString("latin1"))?.[1];
    const finish = (answer: RawAnswer) => {
      if (settled) return;
      settled = true;
      socket.destroy();
      resolve(answer);
    };
    socket.on("error", (error) => {
      const code = (error as NodeJS.ErrnoException).code ?? String(error);
      const status = written ? statusOf() : undefined;
      finish(status === undefined ? { status: code } : { status: Number(status), ended: "reset" });
    });
    socket.on("data", (chunk) => chunks.push(chunk));
    socket.on("end", () => {
      const status = statusOf();
      finish(
        status === undefined
          ? { status: "closed without an answer" }
          : { status: Number(status), ended: "closed" },
      );
    });
    socket.on("connect", async () => {
      socket.write(head);
      // A client on a real network uploads over time; the server answers and closes meanwhile.
      for (let sent = 0; sent < body.length && !settled; sent += chunkBytes) {
        const chunk = body.subarray(sent, sent + chunkBytes);
        await new Promise<void>((done) => socket.write(chunk, () => setTimeout(done, 2)));
      }
      written = true;
      socket.end();
      socket.resume();
    });
  });
}

describe("the gateway's edges", () => {
  it("answers a 2 MiB body with a 413 the client reads, also when it keeps sending", async () => {
    const body = Buffer.alloc(2 * 1024 * 1024, "a");
    for (let attempt = 0; attempt < 3; attempt++) {
      const head = `POST /api/gifts/send HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: ${body.length}\r\n\r\n`;
      expect(await rawRequest(head, body, 64 * 1024)).toEqual({ status: 413, ended: "closed" });
    }
  });

  it("answers a 2 MiB body to fetch (which uploads all before it reads) with a 413, also streamed", async () => {
    for (const chunked of [false, true, false, true]) {
      const bytes = new Uint8Array(2 * 1024 * 1024).fill(97);
      const body = chunked
        ? new ReadableStream({
            start(controller) {
              for (let i = 0; i < bytes.length; i += 16 * 1024)
                controller.enqueue(bytes.subarray(i, i + 16 * 1024));
              controller.close();
            },
          })
        : bytes;
      const answer = await fetch(`${h.gateway.url}/api/gifts/send`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body,
        duplex: "half",
      } as RequestInit).then(
        (response) => response.status,
        (error: Error) => `${error.message}: ${String((error.cause as Error | undefined)?.message)}`,
      );
      expect(answer, chunked ? "chunked" : "with content-length").toBe(413);
    }
  });

  it("answers a 100 KB Authorization header with 431, not a reset connection", async () => {
    const head = `GET /api/wallet HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${"a".repeat(100 * 1024)}\r\n\r\n`;
    expect(await rawRequest(head)).toEqual({ status: 431, ended: "closed" });
    const answer = await fetch(`${h.gateway.url}/api/wallet`, {
      headers: { authorization: `Bearer ${"a".repeat(100 * 1024)}` },
    }).then(
      (response) => response.status,
      (error: Error) => `${error.message}: ${String((error.cause as Error | undefined)?.message)}`,
    );
    expect(answer).toBe(431);
  });

  it("answers a NUL character in an identifier with 400, not a 503 to retry", async () => {
    const token = (await call(h.gateway.url, "POST", "/api/auth/token", { body: { userId: "nul" } })).body
      .token;
    for (const [targetType, targetId] of [
      ["BOOST_TARGET_TYPE_ROOM", "room\u0000one"],
      ["BOOST_TARGET_TYPE_HOST", "ha\u0000na"],
      ["BOOST_TARGET_TYPE_PK_SIDE", `${crypto.randomUUID()}\u0000:A`],
    ]) {
      const boost = await call(h.gateway.url, "POST", "/api/boosts", {
        token,
        body: { targetType, targetId, amount: "10", durationHours: 1, idempotencyKey: crypto.randomUUID() },
      });
      expect([targetType, boost.status, boost.body.code]).toEqual([targetType, 400, "invalid_argument"]);
    }
    expect((await call(h.gateway.url, "GET", "/api/rooms/a%00b")).status).toBe(400);
  });
});

describe("outages at the gateway", () => {
  it("answers GET /api/notifications 503 with Retry-After while Postgres is away, and /readyz 503 at once", async () => {
    await using proxy = await FaultProxy.start(h.env.databaseUrl);
    const gateway = await h.extraGateway({ DATABASE_URL: proxy.url(h.env.databaseUrl) });
    const token = (await call(gateway.url, "POST", "/api/auth/token", { body: { userId: "away" } })).body
      .token;
    expect((await call(gateway.url, "GET", "/api/notifications", { token })).status).toBe(200);
    expect((await call(gateway.url, "GET", "/readyz")).status).toBe(200);
    proxy.cut();
    for (let i = 0; i < 5; i++) {
      const listed = await call(gateway.url, "GET", "/api/notifications", { token });
      expect([listed.status, listed.body.code]).toEqual([503, "unavailable"]);
      expect(listed.headers.get("retry-after")).not.toBeNull();
    }
    const started = performance.now();
    expect((await call(gateway.url, "GET", "/readyz")).status).toBe(503);
    expect(performance.now() - started).toBeLessThan(2_000);
    proxy.restore();
    await waitFor(
      async () => (await call(gateway.url, "GET", "/api/notifications", { token })).status === 200,
      {
        what: "notifications once Postgres is back",
      },
    );
  });

  it("counts a service that answers its calls as healthy while its health check times out, and stays ready when one is down", async () => {
    await using proxy = await FaultProxy.start(h.gift.server.url);
    const gateway = await h.extraGateway({ GIFT_URL: proxy.url(h.gift.server.url) });
    const readyGift = async () => (await call(gateway.url, "GET", "/readyz")).body.upstreams.gift;
    expect(await readyGift()).toBe(true);
    // 2.4 s each round trip: past the 2 s health check, within the 5 s deadline of a call, as
    // for a service busy with a burst.
    proxy.latency(1_200);
    await waitFor(async () => (await readyGift()) === false, {
      timeoutMs: 15_000,
      what: "the health check to time out",
    });
    const catalog = await call(gateway.url, "GET", "/api/gifts");
    expect(catalog.status).toBe(200);
    expect(await readyGift()).toBe(true);
    // No answers any more: the next health check decides, and it fails. The gateway stays
    // ready: it answers 503 on the routes that need the gift service, and serves the others.
    proxy.cut();
    await waitFor(async () => (await readyGift()) === false, {
      timeoutMs: 15_000,
      what: "readiness to follow the cut",
    });
    const ready = await call(gateway.url, "GET", "/readyz");
    expect([ready.status, ready.body.status, ready.body.upstreams]).toEqual([
      200,
      "ready",
      { wallet: true, gift: false },
    ]);
    expect((await call(gateway.url, "GET", "/api/gifts")).status).toBe(503);
    proxy.restore();
  });

  it("answers the DLQ admin 503 at once while NATS is away, not 504 after the JetStream timeout", async () => {
    await using proxy = await FaultProxy.start(h.env.natsUrl.replace("nats:", "http:"));
    const wallet = await startWallet({
      ...h.env.env,
      PORT: "0",
      RUN_CONSUMERS: "false",
      NATS_URL: proxy.url(h.env.natsUrl.replace("nats:", "http:")).replace("http:", "nats:"),
    });
    try {
      const gateway = await h.extraGateway({ WALLET_URL: wallet.server.url });
      const admin = (
        await call(gateway.url, "POST", "/api/auth/token", { body: { userId: "root", roles: ["admin"] } })
      ).body.token;
      expect((await call(gateway.url, "GET", "/api/admin/dlq", { token: admin })).status).toBe(200);
      proxy.cut();
      await waitFor(() => !wallet.bus.connected, { what: "the wallet to see NATS gone" });
      const started = performance.now();
      const listed = await call(gateway.url, "GET", "/api/admin/dlq", { token: admin });
      expect([listed.status, listed.body.code]).toEqual([503, "unavailable"]);
      expect(performance.now() - started).toBeLessThan(1_000);
      proxy.restore();
    } finally {
      await wallet.close();
    }
  });
});
