// Proves that a service process dying in the middle of a call is a retryable 503 for the REST
// client, never a 409 "conflict" that reads like a refusal, and that retrying with the same
// Idempotency-Key once the service is back moves the money exactly once. The wallet runs as a
// child process so it can be SIGKILLed; a row lock held by the test keeps its transfer waiting
// in Postgres, so the kill always lands mid-call.
import { resolve } from "node:path";
import { type GiftApp, startGift } from "@ovation/gift";
import { type TestEnvironment, testEnvironment, waitFor } from "@ovation/testkit";
import { type ServiceProcess, startServiceProcess } from "@ovation/testkit/bench";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Gateway, startGateway } from "../src/main.ts";
import { call, type Reply } from "./helpers.ts";

const walletMain = resolve(import.meta.dirname, "../../wallet/src/main.ts");
const fastRetries = { EVENTS_RETRY_BACKOFF_MS: "50,100,200", EVENTS_ACK_WAIT_MS: "1500" };

let env: TestEnvironment;
let wallet: ServiceProcess;
let gift: GiftApp;
let gateway: Gateway;
let url: string;
let admin: string;
let viewer: string;
let roomId: string;

const coins = async () => {
  const reply = await call(url, "GET", "/api/wallet", { token: viewer });
  return BigInt(reply.body.balances.find((b: { asset: string }) => b.asset === "COIN")?.amount ?? "0");
};

/**
 * Holds a lock on the viewer's account row until `release` is called, so any wallet transfer
 * touching that account waits inside Postgres.
 */
async function lockViewerAccount(): Promise<{ release(): Promise<void> }> {
  let release!: () => void;
  const released = new Promise<void>((resolve) => {
    release = resolve;
  });
  let locked!: () => void;
  const isLocked = new Promise<void>((resolve) => {
    locked = resolve;
  });
  const transaction = gift.orm.em.fork().transactional(async (em) => {
    await em.execute("select 1 from wallet.accounts where owner = 'user:vic' for update");
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

/** Resolves once some session of this database waits for a lock: the wallet's transfer. */
const walletWaitsForLock = () =>
  waitFor(async () => {
    const [row] = await gift.orm.em
      .fork()
      .execute<{ n: number }[]>(
        "select count(*)::int as n from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock'",
      );
    return row!.n > 0;
  });

/** Kills the wallet mid-call, lets its transfer go, and starts a new wallet on the same port. */
async function crashWalletDuring(request: Promise<Reply>): Promise<Reply> {
  const lock = await lockViewerAccount();
  try {
    await walletWaitsForLock();
    await wallet.stop("SIGKILL");
    return await request;
  } finally {
    await lock.release();
    wallet = await startServiceProcess(walletMain, { ...env.env, ...fastRetries }, wallet.port);
  }
}

function expectRetryable(reply: Reply): void {
  expect(reply.status, JSON.stringify(reply.body)).toBe(503);
  expect(reply.body).toMatchObject({ code: "unavailable", details: [] });
  expect(Number(reply.headers.get("retry-after"))).toBeGreaterThan(0);
}

beforeAll(async () => {
  env = await testEnvironment();
  wallet = await startServiceProcess(walletMain, { ...env.env, ...fastRetries });
  gift = await startGift({ ...env.env, PORT: "0", WALLET_URL: wallet.url, ...fastRetries });
  gateway = await startGateway({ ...env.env, PORT: "0", WALLET_URL: wallet.url, GIFT_URL: gift.server.url });
  url = gateway.url;
  admin = await env.token("root", ["admin"]);
  viewer = await env.token("vic", ["user"]);
  const host = await env.token("hana", ["user", "host"]);
  await call(url, "POST", "/api/admin/gifts", {
    token: admin,
    body: { gift: { id: "rose", name: "Rose", price: "10", animationKey: "rose" } },
  });
  const minted = await call(url, "POST", "/api/admin/wallet/mint", {
    token: admin,
    body: { userId: "vic", money: { asset: "COIN", amount: "1000" }, idempotencyKey: crypto.randomUUID() },
  });
  expect(minted.status).toBe(200);
  roomId = (await call(url, "POST", "/api/rooms", { token: host, body: {} })).body.room.id;
});
afterAll(async () => {
  await gateway?.close();
  await gift?.close();
  await wallet?.stop();
  await env?.[Symbol.asyncDispose]();
});

describe("an upstream process killed mid-call", () => {
  it("a gift send whose wallet dies mid-transfer answers 503, and its retry with the same key charges once", async () => {
    const before = await coins();
    const key = crypto.randomUUID();
    const send = () =>
      call(url, "POST", "/api/gifts/send", {
        token: viewer,
        body: { roomId, giftId: "rose", count: 1 },
        headers: { "idempotency-key": key },
      });
    expectRetryable(await crashWalletDuring(send()));

    const retried = await send();
    expect(retried.status, JSON.stringify(retried.body)).toBe(200);
    expect(await coins()).toBe(before - 10n);
    expect((await send()).body.gift.id, "a second retry returns the same send").toBe(retried.body.gift.id);
    const [row] = await gift.orm.em
      .fork()
      .execute<{ n: number }[]>(
        "select count(*)::int as n from wallet.transfers where debit_owner = 'user:vic' and reference = ?",
        [retried.body.gift.id],
      );
    expect(row!.n).toBe(1);
    expect(await coins()).toBe(before - 10n);
  });

  it("a mint whose wallet dies mid-call answers 503 from the gateway's own upstream, and its retry credits once", async () => {
    const before = await coins();
    const key = crypto.randomUUID();
    const mint = () =>
      call(url, "POST", "/api/admin/wallet/mint", {
        token: admin,
        body: { userId: "vic", money: { asset: "COIN", amount: "7" }, reference: "crash" },
        headers: { "idempotency-key": key },
      });
    expectRetryable(await crashWalletDuring(mint()));

    const retried = await mint();
    expect(retried.status, JSON.stringify(retried.body)).toBe(200);
    expect((await mint()).status).toBe(200);
    expect(await coins()).toBe(before + 7n);
  });
});
