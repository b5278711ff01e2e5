// Proves that a room's fan-out scales with viewers (0033): a burst of gifts into a room reaches
// every subscribed socket in at most one frame per tick (frames ≤ ticks elapsed + 1), each alert
// either delivered once or counted as dropped in a frame, the biggest gifts kept when a frame
// is full; and while a storm fans out to hundreds of sockets, REST and /readyz keep answering.
// Before 0033 every alert was its own frame to every socket, written in one synchronous pass:
// the storm below was 3,000,000 writes in a row and /readyz waited for all of them.

import { monitorEventLoopDelay } from "node:perf_hooks";
import { waitFor } from "@ovation/testkit";
import { seedFundedUsers } from "@ovation/testkit/bench";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import { call, type GatewayHarness, type Reply, startGatewayHarness } from "./helpers.ts";

const tickMs = 100;
const batchMax = 20;
const viewerCount = 300;
const senderCount = 30;
const sendsPerSender = 10;
/** Gifts of this many senders are diamonds (100× a rose): a full frame must never leave them out. */
const diamondSenders = 2;
/** Events a JetStream pull hands the feed at once (ephemeral.ts), all in one turn. */
const stormBatch = 256;
/**
 * Longest the event loop may stall during the storm. A turn of the fan-out writes at most 256
 * sockets, a millisecond or two; the rest is margin for a machine shared with other test runs
 * (389 ms seen at a load average of 17 on two cores). Before 0033 the first pull batch alone
 * held the loop for seconds, and the storm outlasted the test's timeout.
 */
const stallMaxMs = 1_000;
/** Machine shared with other test runs: generous, not a target. */
const testTimeoutMs = 120_000;

let h: GatewayHarness;
let url: string;
let roomId: string;
const senderTokens: string[] = [];

/** A room viewer that keeps counts instead of every message (the storm is 10,000 alerts). */
interface Viewer {
  socket: WebSocket;
  /** Room frames received, and when the last one arrived (performance.now). */
  roomFrames: number;
  lastFrameMs: number;
  /** Alert ids received (gift.sent: the send id; others: the event id), and repeats of one. */
  received: Set<string>;
  repeated: number;
  /** Alerts the room frames said they left out, plus those skipped while the socket was slow. */
  dropped: number;
  sendIds: Set<string>;
}

async function openViewer(index: number, channel: string): Promise<Viewer> {
  const token = await h.env.token(`viewer${index}`, ["user"]);
  const socket = new WebSocket(`${url.replace(/^http/, "ws")}/ws`, ["ovation.v1", `bearer.${token}`]);
  const viewer: Viewer = {
    socket,
    roomFrames: 0,
    lastFrameMs: 0,
    received: new Set(),
    repeated: 0,
    dropped: 0,
    sendIds: new Set(),
  };
  await new Promise<void>((subscribed, fail) => {
    socket.once("error", fail);
    socket.on("message", (data) => {
      const frame = JSON.parse(data.toString());
      if (frame.type === "authenticated") socket.send(JSON.stringify({ op: "subscribe", channel }));
      else if (frame.type === "subscribed") subscribed();
      else if (frame.type === "dropped") viewer.dropped += frame.count;
      else if (frame.type === "batch" && frame.channel === channel) {
        viewer.roomFrames++;
        viewer.lastFrameMs = performance.now();
        viewer.dropped += frame.dropped;
        for (const message of frame.messages) {
          const id = message.type === "gift.sent" ? message.data.sendId : message.id;
          if (viewer.received.has(id)) viewer.repeated++;
          viewer.received.add(id);
          if (message.type === "gift.sent" && message.data.giftId === "diamond")
            viewer.sendIds.add(message.data.sendId);
        }
      }
    });
  });
  return viewer;
}

async function openViewers(channel: string): Promise<Viewer[]> {
  const viewers: Viewer[] = [];
  for (let first = 0; first < viewerCount; first += 50) {
    const batch = Array.from({ length: Math.min(50, viewerCount - first) }, (_, i) =>
      openViewer(first + i, channel),
    );
    viewers.push(...(await Promise.all(batch)));
  }
  return viewers;
}

/** Every frame a viewer got began at least a tick after the one before, the first after `startMs`. */
function expectFramesWithinTicks(viewers: Viewer[], startMs: number): void {
  const overBound = viewers.filter(
    (viewer) => viewer.roomFrames > Math.floor((viewer.lastFrameMs - startMs) / tickMs) + 1,
  );
  expect(
    overBound.map((viewer) => ({ frames: viewer.roomFrames, elapsedMs: viewer.lastFrameMs - startMs })),
  ).toEqual([]);
}

/** Times `request` every `intervalMs` until `stop` resolves; returns each reply and its latency. */
async function probe(
  request: () => Promise<Reply>,
  intervalMs: number,
  stop: Promise<unknown>,
): Promise<{ status: number; retryAfter: string | null; ms: number }[]> {
  let stopped = false;
  void stop.then(() => {
    stopped = true;
  });
  const pending: Promise<{ status: number; retryAfter: string | null; ms: number }>[] = [];
  while (!stopped) {
    const started = performance.now();
    pending.push(
      request().then(
        (reply) => ({
          status: reply.status,
          retryAfter: reply.headers.get("retry-after"),
          ms: performance.now() - started,
        }),
        // A connection the gateway dropped: status 0, so the assertion names it.
        () => ({ status: 0, retryAfter: null, ms: performance.now() - started }),
      ),
    );
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
  return Promise.all(pending);
}

beforeAll(async () => {
  h = await startGatewayHarness(
    {
      WS_ROOM_TICK_MS: String(tickMs),
      WS_ROOM_BATCH_MAX: String(batchMax),
      WS_UNAUTHENTICATED_PER_ADDRESS_MAX: "1000",
      RATE_LIMIT_USER_WRITES: "1000000",
      RATE_LIMIT_IP_WRITES: "1000000",
      RATE_LIMIT_USER_READS: "1000000",
      RATE_LIMIT_IP_READS: "1000000",
    },
    { DATABASE_POOL_MAX: "8" },
  );
  url = h.gateway.url;
  const admin = await h.env.token("root", ["admin"]);
  const host = await h.env.token("hana", ["user", "host"]);
  for (const [id, price] of [
    ["rose", "10"],
    ["diamond", "1000"],
  ])
    await call(url, "POST", "/api/admin/gifts", {
      token: admin,
      body: { gift: { id, name: id, price, animationKey: id } },
    });
  roomId = (await call(url, "POST", "/api/rooms", { token: host, body: {} })).body.room.id;
  const em = h.wallet.orm.em.fork();
  await seedFundedUsers({ query: (sql) => em.execute(sql) }, "s", senderCount, 1_000_000n);
  for (let i = 1; i <= senderCount; i++) senderTokens.push(await h.env.token(`s${i}`, ["user"]));
}, testTimeoutMs);
afterAll(() => h?.close());

describe("room fan-out", () => {
  it(
    "delivers a burst of gifts to every socket in at most one frame per tick, each alert once or counted as dropped, the biggest kept",
    async () => {
      const channel = `room:${roomId}`;
      const viewers = await openViewers(channel);
      const startMs = performance.now();
      const sendIds = await Promise.all(
        senderTokens.map(async (token, sender) => {
          const ids: string[] = [];
          for (let i = 0; i < sendsPerSender; i++) {
            const reply = await call(url, "POST", "/api/gifts/send", {
              token,
              body: {
                roomId,
                giftId: sender < diamondSenders ? "diamond" : "rose",
                count: 1,
                idempotencyKey: crypto.randomUUID(),
              },
            });
            expect(reply.status, JSON.stringify(reply.body)).toBe(200);
            ids.push(reply.body.gift.id);
          }
          return ids;
        }),
      );
      const total = senderCount * sendsPerSender;
      const accounted = (viewer: Viewer) => viewer.received.size + viewer.dropped === total;
      await waitFor(() => viewers.every(accounted), {
        what: "every viewer to receive or be told it missed each alert",
        timeoutMs: 30_000,
      });
      const sent = new Set(sendIds.flat());
      const diamonds = new Set(sendIds.slice(0, diamondSenders).flat());
      for (const viewer of viewers) {
        expect(viewer.repeated).toBe(0);
        expect([...viewer.received].filter((id) => !sent.has(id))).toEqual([]);
        expect(viewer.sendIds).toEqual(diamonds);
      }
      expectFramesWithinTicks(viewers, startMs);
      // Coalescing happened: far fewer frames than alerts.
      expect(Math.max(...viewers.map((viewer) => viewer.roomFrames))).toBeLessThan(total);
      for (const viewer of viewers) viewer.socket.terminate();
    },
    testTimeoutMs,
  );

  it(
    "keeps REST and /readyz answering while a storm of 10,000 alerts fans out to 300 sockets",
    async () => {
      const channel = "room:storm";
      const viewers = await openViewers(channel);
      const alerts = 10_000;
      const token = senderTokens[0]!;
      const startMs = performance.now();
      // Gaps between turns of the event loop this process (gateway, services and test) sees.
      const loopDelay = monitorEventLoopDelay({ resolution: 10 });
      loopDelay.enable();
      // The storm arrives as a JetStream feed hands it over: a pull batch of 256 events per turn.
      const storm = (async () => {
        for (let first = 0; first < alerts; first += stormBatch) {
          for (let i = first; i < Math.min(alerts, first + stormBatch); i++) {
            h.gateway.hub.publish(
              {
                kind: "room",
                id: "storm",
                type: "gift.sent",
                data: {
                  sendId: `storm-${i}`,
                  senderId: "vic",
                  hostId: "hana",
                  roomId: "storm",
                  giftId: "rose",
                  giftName: "Rose",
                  animationKey: "rose",
                  count: 1,
                  combo: 1,
                  total: "10",
                  sendTime: null,
                },
                priority: 10,
              },
              `event-${i}`,
              new Date(),
            );
          }
          await new Promise((resolve) => setImmediate(resolve));
        }
      })();
      const delivered = (async () => {
        await storm;
        await waitFor(() => viewers.every((viewer) => viewer.received.size + viewer.dropped === alerts), {
          what: "every viewer to receive or be told it missed each alert",
          timeoutMs: 60_000,
        });
      })();
      const [readiness, reads, wallet] = await Promise.all([
        probe(() => call(url, "GET", "/readyz"), 20, delivered),
        probe(() => call(url, "GET", "/api/gifts"), 20, delivered),
        probe(() => call(url, "GET", "/api/wallet", { token }), 50, delivered),
        delivered,
      ]);
      loopDelay.disable();
      const longestStallMs = loopDelay.max / 1e6;
      for (const results of [readiness, reads, wallet]) {
        expect(results.length).toBeGreaterThan(0);
        // A result, or a 503 that says when to come back, within the 5 s.
        const refused = results.filter(
          (r) => r.status !== 200 && !(r.status === 503 && r.retryAfter !== null),
        );
        expect(refused).toEqual([]);
        expect(Math.max(...results.map((r) => r.ms))).toBeLessThan(5_000);
      }
      // The sharp bound, and one that a busy machine does not blur: the fan-out never holds the
      // event loop for long. Before 0033 one pull batch was 256 × 300 socket writes in one turn.
      expect(longestStallMs).toBeLessThan(stallMaxMs);
      for (const viewer of viewers) expect(viewer.repeated).toBe(0);
      expectFramesWithinTicks(viewers, startMs);
      for (const viewer of viewers) viewer.socket.terminate();
    },
    testTimeoutMs,
  );
});
