// Proves an outage is not poison: Postgres is cut for 30 s in the middle of a gift storm (the
// wallet and the gift service reach it through a fault proxy; the shared server keeps
// running). While it is away every send answers UNAVAILABLE (retry with the same key), never
// INTERNAL or ABORTED; consumers and relays pause instead of spending deliveries; and once it
// is back, the retried sends are charged once, every gift is credited exactly once, nothing
// was dead-lettered, and the ledger audit passes.
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { bearerInterceptor } from "@ovation/auth";
import { DlqService } from "@ovation/proto/gen/ovation/dlq/v1/dlq_pb.ts";
import { GiftService } from "@ovation/proto/gen/ovation/gift/v1/gift_pb.ts";
import { WalletService } from "@ovation/proto/gen/ovation/wallet/v1/wallet_pb.ts";
import { FaultProxy, type TestEnvironment, testEnvironment, waitFor } from "@ovation/testkit";
import { auditLedger, startWallet, type Wallet } from "@ovation/wallet";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type GiftApp, startGift } from "../src/main.ts";
import { fastRetries } from "./helpers.ts";

const outageMs = 30_000;
const senders = 8;
const rosePrice = 5n;
const hostShareBps = 7_000n;

let env: TestEnvironment;
let proxy: FaultProxy;
let wallet: Wallet;
let gift: GiftApp;
let db: pg.Client;

beforeAll(async () => {
  env = await testEnvironment();
  proxy = await FaultProxy.start(env.databaseUrl);
  const viaProxy = { ...env.env, ...fastRetries, DATABASE_URL: proxy.url(env.databaseUrl), PORT: "0" };
  wallet = await startWallet({ ...viaProxy, WALLET_CREDIT_BATCH_MAX: "16" });
  gift = await startGift({ ...viaProxy, WALLET_URL: wallet.server.url });
  db = new pg.Client({ connectionString: env.databaseUrl });
  await db.connect();
});

afterAll(async () => {
  await gift?.close();
  await wallet?.close();
  await proxy?.close();
  await db?.end();
  await env?.[Symbol.asyncDispose]();
});

const client = <S extends Parameters<typeof createClient>[0]>(service: S, url: string, token: string) =>
  createClient(
    service,
    createGrpcTransport({ baseUrl: url, interceptors: [bearerInterceptor(() => token)] }),
  );

async function coins(owner: string): Promise<bigint> {
  const { rows } = await db.query<{ amount: string }>(
    "select coalesce(sum(balance), 0)::text as amount from wallet.accounts where owner = $1 and asset = 'COIN'",
    [owner],
  );
  return BigInt(rows[0]!.amount);
}

describe("a 30 s Postgres outage during a gift storm", () => {
  it("dead-letters nothing, answers UNAVAILABLE meanwhile, and credits every gift exactly once afterwards", async () => {
    const admin = await env.token("root", ["admin"]);
    await client(GiftService, gift.server.url, admin).createGift({
      gift: {
        id: "rose",
        name: "Rose",
        price: rosePrice,
        pkPoints: 5n,
        vipOnly: false,
        minVipLevel: 0,
        animationKey: "",
      },
    });
    const host = client(GiftService, gift.server.url, await env.token("outage-host", ["user", "host"]));
    const roomId = (await host.startLive({ title: "outage" })).room!.id;
    const viewers = await Promise.all(
      Array.from({ length: senders }, async (_, i) => {
        await client(WalletService, wallet.server.url, admin).mint({
          userId: `storm-${i}`,
          money: { asset: "COIN", amount: 100_000n },
          idempotencyKey: `seed-${i}`,
        });
        return client(GiftService, gift.server.url, await env.token(`storm-${i}`, ["user"]));
      }),
    );

    const failed = new Map<string, { viewer: number; code: string }>();
    const answered = new Set<string>();
    let storming = true;
    const storm = viewers.map(async (viewer, v) => {
      for (let i = 0; storming; i++) {
        const idempotencyKey = `send-${v}-${i}`;
        try {
          await viewer.sendGift({ roomId, giftId: "rose", count: 1, idempotencyKey });
          answered.add(idempotencyKey);
        } catch (error) {
          failed.set(idempotencyKey, { viewer: v, code: Code[ConnectError.from(error).code] });
          // A client backing off before its next gift, as apps do when the server says 503.
          await new Promise((resolve) => setTimeout(resolve, 200));
        }
      }
    });

    await waitFor(() => answered.size >= 50, { timeoutMs: 20_000, what: "the storm to get going" });
    proxy.cut();
    await new Promise((resolve) => setTimeout(resolve, outageMs));
    proxy.restore();
    await waitFor(() => answered.size > 0 && [...failed.keys()].length > 0, {
      what: "sends during the outage",
    });
    const answeredAtRestore = answered.size;
    await waitFor(() => answered.size >= answeredAtRestore + 50, {
      timeoutMs: 20_000,
      what: "sends after the outage",
    });
    storming = false;
    await Promise.all(storm);

    // Infrastructure trouble is UNAVAILABLE (or a deadline), never a refusal or a crash.
    const codes = new Set([...failed.values()].map((f) => f.code));
    expect([...codes].filter((code) => code !== "Unavailable" && code !== "DeadlineExceeded")).toEqual([]);
    // Retrying each failed send with its key settles it once.
    for (const [idempotencyKey, { viewer }] of failed) {
      if (answered.has(idempotencyKey)) continue;
      await viewers[viewer]!.sendGift({ roomId, giftId: "rose", count: 1, idempotencyKey });
      answered.add(idempotencyKey);
    }

    const gifts = BigInt(answered.size);
    const { rows } = await db.query<{ n: string }>(
      "select count(*)::text as n from wallet.transfers where kind = 5",
    );
    expect(BigInt(rows[0]!.n)).toBe(gifts);
    await waitFor(async () => (await coins("system:gifts-in-transit")) === 0n, {
      timeoutMs: 30_000,
      what: "every gift credited",
    });
    expect(await coins("user:outage-host")).toBe(gifts * ((rosePrice * hostShareBps) / 10_000n));
    const dlq = await client(DlqService, wallet.server.url, admin).listDlqEntries({});
    expect(dlq.entries).toEqual([]);
    const { rows: failures } = await db.query(
      "select * from wallet.consumer_failures union all select * from gift.consumer_failures",
    );
    expect(failures).toEqual([]);
    expect((await auditLedger(wallet.store)).ok).toBe(true);
  }, 120_000);
});
