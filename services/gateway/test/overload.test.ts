// Proves that an overload sheds instead of collapsing: a burst of 2,000 concurrent REST gift
// sends against the real gateway, gift service and wallet answers every request with a result,
// a 503 with Retry-After, or a 504 — never a 500, a 409 or a dead unrelated call — and retrying
// each refused send with its Idempotency-Key until it succeeds charges every send exactly once.
// A call the upstream has no room for is refused before its token is even verified.
//
// The gift service's sends table is locked while the burst arrives, so every admitted send
// stalls until the deadline, as it does when a database falls behind: that is when a gateway
// without a bound cancels thousands of streams on one connection, the service's rapid-reset
// protection answers GOAWAY, and the calls sharing that connection die with them. The bounds
// are set low so the burst is mostly shed, quickly, on two cores.
import { waitFor } from "@ovation/testkit";
import { seedFundedUsers } from "@ovation/testkit/bench";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { call, type GatewayHarness, type Reply, startGatewayHarness } from "./helpers.ts";

const senders = 500;
const sendsPerSender = 4;
const price = 10n;
const funds = 1_000n;
/** Retries go out this many at a time: under the upstream's in-flight + queue bound. */
const retryConcurrency = 24;
const retryRoundsMax = 40;
/**
 * The burst and the 2,000 sends that must finish take ~20 s on two cores; the margin is for a
 * machine shared with other test runs, where every send is slower, not for a slower design.
 */
const testTimeoutMs = 120_000;

/** Blocks every new gift send in the gift service's database until `release` is called. */
async function lockGiftSends(): Promise<{ release(): Promise<void> }> {
  let release!: () => void;
  const released = new Promise<void>((resolve) => {
    release = resolve;
  });
  let locked!: () => void;
  const isLocked = new Promise<void>((resolve) => {
    locked = resolve;
  });
  const transaction = h.gift.orm.em.fork().transactional(async (em) => {
    await em.execute("lock table gift.sends in exclusive mode");
    locked();
    await released;
  });
  await isLocked;
  return {
    release: async () => {
      release();
      await transaction;
    },
  };
}

let h: GatewayHarness;
let url: string;
let admin: string;
let roomId: string;
const tokens: string[] = [];

interface Send {
  sender: number;
  key: string;
}

/** One send; a connection the gateway dropped counts as status 0, so the test can report it. */
const sendGift = (send: Send): Promise<Reply> =>
  call(url, "POST", "/api/gifts/send", {
    token: tokens[send.sender]!,
    body: { roomId, giftId: "rose", count: 1 },
    headers: { "idempotency-key": send.key },
  }).catch((error: unknown) => ({ status: 0, body: String(error), headers: new Headers() }));

/** Runs `work` over `items`, `concurrency` at a time. */
async function pool<T, R>(items: readonly T[], concurrency: number, work: (item: T) => Promise<R>) {
  const results: R[] = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const index = next++;
      results[index] = await work(items[index]!);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return results;
}

/** The gateway's own refusal when an upstream is at its bound (admission.ts). */
const shedMessage = /^the gift service is busy/;

/** A send that did not succeed may only have been shed (503 + Retry-After) or timed out (504). */
function expectShedOrTimedOut(reply: Reply): void {
  const what = `${reply.status} ${JSON.stringify(reply.body)}`;
  expect([503, 504], what).toContain(reply.status);
  expect(reply.body, what).toMatchObject({
    code: reply.status === 503 ? "unavailable" : "deadline_exceeded",
    details: [],
  });
  if (reply.status === 503) expect(Number(reply.headers.get("retry-after")), what).toBeGreaterThan(0);
}

beforeAll(async () => {
  h = await startGatewayHarness(
    {
      UPSTREAM_INFLIGHT_MAX: "16",
      UPSTREAM_QUEUE_MAX: "32",
      UPSTREAM_QUEUE_WAIT_MS: "200",
      UPSTREAM_TIMEOUT_MS: "1000",
      // One test client on one address sends everything: the flood guards are not under test.
      RATE_LIMIT_USER_WRITES: "1000000",
      RATE_LIMIT_IP_WRITES: "1000000",
      RATE_LIMIT_USER_READS: "1000000",
      RATE_LIMIT_IP_READS: "1000000",
    },
    {
      // The stalled sends hold every pooled connection; keep this file's share of the shared
      // Postgres server's connections small so files running beside it are not starved.
      DATABASE_POOL_MAX: "8",
    },
  );
  url = h.gateway.url;
  admin = await h.env.token("root", ["admin"]);
  const host = await h.env.token("hana", ["user", "host"]);
  await call(url, "POST", "/api/admin/gifts", {
    token: admin,
    body: { gift: { id: "rose", name: "Rose", price: String(price), animationKey: "rose" } },
  });
  roomId = (await call(url, "POST", "/api/rooms", { token: host, body: {} })).body.room.id;
  // Senders s1..s500 are funded straight in the ledger (one mint transfer each, as the
  // benchmarks do): 500 mint calls would only slow the file beside this one.
  const em = h.wallet.orm.em.fork();
  await seedFundedUsers({ query: (sql) => em.execute(sql) }, "s", senders, funds);
  for (let i = 1; i <= senders; i++) tokens.push(await h.env.token(`s${i}`, ["user"]));
});
afterAll(() => h?.close());

describe("overload", () => {
  it(
    "sheds a 2,000-send burst with 503/504 only, and retries with the same keys charge every send exactly once",
    async () => {
      const sends: Send[] = [];
      for (let round = 0; round < sendsPerSender; round++) {
        for (let sender = 0; sender < senders; sender++) sends.push({ sender, key: crypto.randomUUID() });
      }
      const lock = await lockGiftSends();
      let burst: Reply[];
      let walletReads: Reply[];
      let giftReads: Reply[];
      try {
        // Unrelated reads during the burst: the wallet's must succeed; the gift service's (served
        // from its catalog cache) may be shed with the sends, but must not die with them.
        const reads = (path: string) =>
          Array.from({ length: 20 }, async (_, i) => {
            await new Promise((resolve) => setTimeout(resolve, i * 50));
            return call(url, "GET", path, { token: admin });
          });
        const pendingWalletReads = Promise.all(reads("/api/wallet"));
        const pendingGiftReads = Promise.all(reads("/api/gifts"));
        burst = await Promise.all(sends.map(sendGift));
        walletReads = await pendingWalletReads;
        giftReads = await pendingGiftReads;
      } finally {
        await lock.release();
      }
      const statuses = new Map<number, number>();
      for (const reply of burst) statuses.set(reply.status, (statuses.get(reply.status) ?? 0) + 1);
      for (const reply of burst) if (reply.status !== 200) expectShedOrTimedOut(reply);
      expect(statuses.get(503) ?? 0, `statuses ${JSON.stringify([...statuses])}`).toBeGreaterThan(0);
      // Every 503 is the gateway declining to queue more, none a call that died with its
      // connection (a GOAWAY or reset surfaces as "service unavailable").
      for (const reply of [...burst, ...giftReads]) {
        if (reply.status === 503) expect(reply.body.message).toMatch(shedMessage);
      }
      expect(giftReads.filter((reply) => reply.status !== 200 && reply.status !== 503)).toEqual([]);
      expect(walletReads.map((reply) => reply.status)).toEqual(walletReads.map(() => 200));
      const metrics = await (await fetch(`${url}/metrics`)).text();
      expect(metrics).toMatch(
        /ovation_gateway_upstream_shed_total\{upstream="gift",reason="queue-full"\} [1-9]/,
      );

      let pending = sends.filter((_, index) => burst[index]!.status !== 200);
      for (let round = 0; pending.length > 0; round++) {
        expect(round, `${pending.length} sends still refused`).toBeLessThan(retryRoundsMax);
        const replies = await pool(pending, retryConcurrency, sendGift);
        for (const reply of replies) if (reply.status !== 200) expectShedOrTimedOut(reply);
        const retryAfterSeconds = Math.max(
          0,
          ...replies.map((reply) => Number(reply.headers.get("retry-after") ?? 0)),
        );
        pending = pending.filter((_, index) => replies[index]!.status !== 200);
        if (pending.length > 0) await new Promise((resolve) => setTimeout(resolve, retryAfterSeconds * 1000));
      }

      const em = h.wallet.orm.em.fork();
      const balances = await em.execute<{ owner: string; balance: string }[]>(
        "select owner, balance::text from wallet.accounts where owner like 'user:s%' and asset = 'COIN'",
      );
      expect(balances).toHaveLength(senders);
      const expected = String(funds - price * BigInt(sendsPerSender));
      expect(balances.filter((row) => row.balance !== expected)).toEqual([]);
      const [charges] = await em.execute<{ transfers: number; senders: number }[]>(
        `select count(*)::int as transfers, count(distinct debit_owner)::int as senders
       from wallet.transfers where debit_owner like 'user:s%' and credit_owner = 'system:gifts-in-transit'`,
      );
      expect(charges).toEqual({ transfers: senders * sendsPerSender, senders });
    },
    testTimeoutMs,
  );

  it("refuses a call its upstream has no room for before verifying its token", async () => {
    // Two slots and two places in the queue, kept full by sends stalled on the locked table.
    const gateway = await h.extraGateway({
      UPSTREAM_INFLIGHT_MAX: "2",
      UPSTREAM_QUEUE_MAX: "2",
      UPSTREAM_QUEUE_WAIT_MS: "30000",
      UPSTREAM_TIMEOUT_MS: "30000",
    });
    const gift = gateway.routes.routes.find((route) => route.target.name === "gift")!.target;
    const forged = `${tokens[0]!.slice(0, -4)}AAAA`;
    const sendWith = (token: string, key: string) =>
      call(gateway.url, "POST", "/api/gifts/send", {
        token,
        body: { roomId, giftId: "rose", count: 1 },
        headers: { "idempotency-key": key },
      });
    const lock = await lockGiftSends();
    let stalled: Promise<Reply>[];
    let whileFull: Reply[];
    try {
      stalled = [1, 2, 3, 4].map((i) => sendWith(tokens[i]!, `full-${i}`));
      await waitFor(() => gift.inFlight === 2 && gift.waiting === 2, { what: "the gift upstream full" });
      whileFull = await Promise.all([sendWith(forged, "full-forged"), sendWith(tokens[5]!, "full-5")]);
    } finally {
      await lock.release();
    }
    expect((await Promise.all(stalled)).map((reply) => reply.status)).toEqual([200, 200, 200, 200]);
    for (const reply of whileFull) {
      expectShedOrTimedOut(reply);
      expect(reply.status).toBe(503);
      expect(reply.body.message).toMatch(shedMessage);
    }
    // With room again, the forged token is what the gateway answers.
    expect((await sendWith(forged, "forged-again")).status).toBe(401);
  });
});
