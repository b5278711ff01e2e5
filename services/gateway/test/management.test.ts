// Proves the management port (MANAGEMENT_PORT, decision 0055): GET /healthz and GET /readyz
// answer there as on the public port and nothing else does; while the gateway's main event loop
// is blocked (as by a burst) a probe from another process is still answered, within
// milliseconds, with the last readiness the main thread gave; and a main loop blocked past
// MANAGEMENT_STALE_MS turns both probes to 503, until it runs again; a draining gateway answers
// 503 there until it has stopped, and one that cannot start leaves no management port behind.
import { spawn } from "node:child_process";
import { once } from "node:events";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { waitFor } from "@ovation/testkit";
import { freePort } from "@ovation/testkit/bench";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startGateway } from "../src/main.ts";
import { call, type GatewayHarness, startGatewayHarness } from "./helpers.ts";

const staleMs = 400;
const folder = mkdtempSync(join(tmpdir(), "ovation-management-"));
let h: GatewayHarness;
let managementUrl: string;
beforeAll(async () => {
  h = await startGatewayHarness({ MANAGEMENT_PORT: "0", MANAGEMENT_STALE_MS: String(staleMs) });
  managementUrl = h.gateway.managementUrl()!;
});
afterAll(async () => {
  await h?.close();
  rmSync(folder, { recursive: true, force: true });
});

interface Probe {
  path: string;
  /** Wait this long after the previous probe's answer before sending. */
  afterMs: number;
}

interface ProbeAnswer {
  path: string;
  status: number;
  body: Record<string, unknown>;
  ms: number;
  /** Date.now() when the answer arrived. */
  at: number;
}

/**
 * The probes, sent one after another from a process of their own (a new connection each, as a
 * balancer probes), while this process's main thread stays blocked from the moment the child
 * says it starts until `blockMs` later.
 */
async function probeWhileBlocked(
  probes: Probe[],
  blockMs: number,
): Promise<{ answers: ProbeAnswer[]; blockEnd: number }> {
  const marker = join(folder, `started-${Date.now()}-${Math.random()}`);
  const source = `
    const http = require("node:http");
    const { writeFileSync } = require("node:fs");
    const [url, marker, probes] = process.argv.slice(1);
    const get = (path) => new Promise((done) => {
      const started = performance.now();
      http.get(url + path, { agent: false }, (response) => {
        let text = "";
        response.on("data", (chunk) => (text += chunk));
        response.on("end", () => done({ path, status: response.statusCode, body: JSON.parse(text), ms: performance.now() - started, at: Date.now() }));
      });
    });
    (async () => {
      writeFileSync(marker, "");
      const answers = [];
      for (const probe of JSON.parse(probes)) {
        await new Promise((resolve) => setTimeout(resolve, probe.afterMs));
        answers.push(await get(probe.path));
      }
      console.log(JSON.stringify(answers));
    })();`;
  const child = spawn(process.execPath, ["-e", source, managementUrl, marker, JSON.stringify(probes)], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  let output = "";
  child.stdout.on("data", (chunk) => (output += chunk));
  const exited = new Promise((resolve) => child.once("exit", resolve));
  const startDeadline = Date.now() + 20_000;
  while (!existsSync(marker)) {
    if (Date.now() > startDeadline) throw new Error("the probing process did not start in time");
  }
  // Blocked: no timer, no I/O callback, no promise of this thread runs until blockEnd.
  const blockEnd = Date.now() + blockMs;
  while (Date.now() < blockEnd) {}
  await exited;
  return { answers: JSON.parse(output) as ProbeAnswer[], blockEnd };
}

describe("the management port", () => {
  it("answers /healthz and /readyz as the public port does, and nothing else", async () => {
    const [publicReady, ready, health, metrics, post] = await Promise.all([
      call(h.gateway.url, "GET", "/readyz"),
      call(managementUrl, "GET", "/readyz"),
      call(managementUrl, "GET", "/healthz"),
      call(managementUrl, "GET", "/metrics"),
      call(managementUrl, "POST", "/readyz"),
    ]);
    expect(publicReady.status).toBe(200);
    expect(ready.status).toBe(200);
    expect(ready.body).toEqual(publicReady.body);
    expect(ready.body.upstreams).toEqual({ wallet: true, gift: true });
    expect(health).toMatchObject({ status: 200, body: { status: "ok" } });
    expect(metrics).toMatchObject({ status: 404, body: { code: "not_found" } });
    expect(post.status).toBe(404);
  });

  it("answers while the main event loop is blocked, at once, with its last readiness", async () => {
    const { answers, blockEnd } = await probeWhileBlocked(
      [
        { path: "/readyz", afterMs: 0 },
        { path: "/healthz", afterMs: 50 },
      ],
      1_500,
    );
    for (const answer of answers) {
      expect(answer.status, answer.path).toBe(200);
      expect(answer.at, `${answer.path} answered while the loop was blocked`).toBeLessThan(blockEnd);
      expect(answer.ms).toBeLessThan(500);
    }
    expect(answers[0]!.body.upstreams).toEqual({ wallet: true, gift: true });
  });

  it("answers 503 once the main loop has been stuck longer than MANAGEMENT_STALE_MS, and 200 when it runs again", async () => {
    const { answers, blockEnd } = await probeWhileBlocked(
      [
        { path: "/readyz", afterMs: 0 },
        { path: "/readyz", afterMs: staleMs + 200 },
        { path: "/healthz", afterMs: 0 },
      ],
      2_500,
    );
    expect(answers.map((answer) => answer.status)).toEqual([200, 503, 503]);
    for (const answer of answers) expect(answer.at).toBeLessThan(blockEnd);
    expect(answers[1]!.body).toMatchObject({ status: "stalled" });
    // The main thread answers the question left pending as soon as it runs again.
    await waitFor(async () => (await call(managementUrl, "GET", "/readyz")).status === 200, {
      timeoutMs: 5_000,
      what: "/readyz 200 again",
    });
    expect((await call(managementUrl, "GET", "/healthz")).status).toBe(200);
  });

  const ownGateway = (settings: Record<string, string>) =>
    startGateway({
      ...h.env.env,
      WALLET_URL: h.wallet.server.url,
      GIFT_URL: h.gift.server.url,
      MANAGEMENT_PORT: "0",
      ...settings,
    });

  it("answers 503 on /readyz while the gateway drains a request in flight, and stops with it", async () => {
    const gateway = await ownGateway({ PORT: "0" });
    const management = gateway.managementUrl()!;
    expect((await call(management, "GET", "/readyz")).status).toBe(200);
    // A request in flight that holds the drain: its body never arrives in full.
    const socket = net.connect(Number(new URL(gateway.url).port), "127.0.0.1");
    await once(socket, "connect");
    socket.on("error", () => {});
    socket.write(
      "POST /api/gifts/send HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{",
    );
    // Answered after the partial request was read (its bytes came first).
    expect((await call(gateway.url, "GET", "/healthz")).status).toBe(200);
    const closing = gateway.close();
    try {
      await waitFor(async () => (await call(management, "GET", "/readyz")).status === 503, {
        what: "/readyz 503 on the management port while draining",
      });
      expect((await call(management, "GET", "/healthz")).status).toBe(200);
    } finally {
      socket.destroy();
      await closing;
    }
    await expect(call(management, "GET", "/readyz")).rejects.toThrow();
  });

  it("leaves no management port behind when the public port cannot be taken", async () => {
    const taken = net.createServer();
    await new Promise<void>((resolve) => taken.listen(0, "127.0.0.1", resolve));
    const port = (taken.address() as net.AddressInfo).port;
    try {
      const managementPort = await freePort();
      await expect(
        ownGateway({ PORT: String(port), MANAGEMENT_PORT: String(managementPort) }),
      ).rejects.toThrow();
      // The management port is free again: something else can listen on it.
      const again = net.createServer();
      await new Promise<void>((resolve, reject) => {
        again.once("error", reject);
        again.listen(managementPort, "127.0.0.1", resolve);
      });
      await new Promise((resolve) => again.close(resolve));
    } finally {
      await new Promise((resolve) => taken.close(resolve));
    }
  });
});
