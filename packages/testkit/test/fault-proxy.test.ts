// Proves the fault proxy does what fault tests rely on: traffic passes, a cut kills open
// connections and refuses new ones, lost replies let requests through but not their answers, a
// restore lets new connections through again, a delay holds traffic back, and a latency delays
// a burst of chunks together.
import net from "node:net";
import pg from "pg";
import { describe, expect, it } from "vitest";
import { FaultProxy, testServers } from "../src/index.ts";

async function query(url: string): Promise<number> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 2_000 });
  client.on("error", () => {});
  await client.connect();
  try {
    const { rows } = await client.query<{ n: number }>("select 1 as n");
    return rows[0]!.n;
  } finally {
    await client.end().catch(() => {});
  }
}

describe("fault proxy", () => {
  it("passes traffic, cuts open and new connections, and restores them", async () => {
    await using proxy = await FaultProxy.start(testServers.postgresUrl);
    const url = proxy.url(testServers.postgresUrl);
    expect(await query(url)).toBe(1);

    const open = new pg.Client({ connectionString: url });
    const lost = new Promise<Error>((resolve) => open.on("error", resolve));
    await open.connect();
    proxy.cut();
    expect((await lost).message).toMatch(/terminated|ECONNRESET/i);
    await expect(query(url)).rejects.toThrow();

    proxy.restore();
    expect(await query(url)).toBe(1);
  });

  it("loses replies: the request takes effect, its answer never arrives, and restore resets the connection", async () => {
    await using proxy = await FaultProxy.start(testServers.postgresUrl);
    const channel = `fault_proxy_${crypto.randomUUID().replaceAll("-", "")}`;
    const observer = new pg.Client({ connectionString: testServers.postgresUrl });
    await observer.connect();
    const client = new pg.Client({
      connectionString: proxy.url(testServers.postgresUrl),
      query_timeout: 300,
    });
    client.on("error", () => {});
    await client.connect();
    try {
      await observer.query(`listen ${channel}`);
      const heard = new Promise((resolve) => observer.on("notification", resolve));
      proxy.loseReplies();
      await expect(client.query(`notify ${channel}`)).rejects.toThrow(/timeout/i);
      expect(await heard).toMatchObject({ channel });
      proxy.restore();
      expect(await query(proxy.url(testServers.postgresUrl))).toBe(1);
    } finally {
      await client.end().catch(() => {});
      await observer.end();
    }
  });

  it("delays traffic while a delay is set", async () => {
    await using proxy = await FaultProxy.start(testServers.postgresUrl);
    const client = new pg.Client({ connectionString: proxy.url(testServers.postgresUrl) });
    await client.connect();
    try {
      proxy.delay(150);
      const started = performance.now();
      await client.query("select 1");
      // A round trip crosses the proxy twice.
      expect(performance.now() - started).toBeGreaterThanOrEqual(290);
    } finally {
      proxy.restore();
      await client.end();
    }
  });

  it("passes a burst of chunks on together after the latency, not one latency per chunk", async () => {
    const echo = net.createServer((socket) => socket.pipe(socket));
    await new Promise<void>((resolve) => echo.listen(0, "127.0.0.1", resolve));
    const target = `tcp://127.0.0.1:${(echo.address() as net.AddressInfo).port}`;
    await using proxy = await FaultProxy.start(target);
    proxy.latency(200);
    const socket = net.connect(proxy.port, "127.0.0.1");
    try {
      await new Promise<void>((resolve) => socket.once("connect", () => resolve()));
      const chunks = 10;
      let received = 0;
      const echoed = new Promise<void>((resolve) =>
        socket.on("data", (data) => {
          received += data.length;
          if (received === chunks) resolve();
        }),
      );
      const started = performance.now();
      for (let i = 0; i < chunks; i++) {
        socket.write("x");
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      await echoed;
      // Out and back: about 2 × 200 ms plus the 100 ms of writing, far from 10 × 2 × 200 ms.
      const elapsed = performance.now() - started;
      expect(elapsed).toBeGreaterThanOrEqual(390);
      expect(elapsed).toBeLessThan(2_000);
    } finally {
      socket.destroy();
      await new Promise<void>((resolve) => echo.close(() => resolve()));
    }
  });
});
