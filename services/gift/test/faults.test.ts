// Proves the gift pipeline survives its faults against the real Postgres and NATS: the wallet
// (and its host-credit consumer) killed mid-stream and restarted credits every gift exactly
// once; a gift no debit paid for is dead-lettered at once while the rest keeps flowing; a
// send while the wallet is down fails cleanly and its retry is charged once; and after a storm
// of gifts the ledger balances and host credits plus revenue equal what senders paid.
import { execFile } from "node:child_process";
import { resolve } from "node:path";
import { promisify } from "node:util";
import { create, toBinary } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { headers as natsHeaders } from "@nats-io/nats-core";
import { bearerInterceptor } from "@ovation/auth";
import { EventBus, headerNames } from "@ovation/events";
import { DlqService } from "@ovation/proto/gen/ovation/dlq/v1/dlq_pb.ts";
import { GiftSentSchema } from "@ovation/proto/gen/ovation/gift/v1/events_pb.ts";
import { GiftService } from "@ovation/proto/gen/ovation/gift/v1/gift_pb.ts";
import { WalletService } from "@ovation/proto/gen/ovation/wallet/v1/wallet_pb.ts";
import { type TestEnvironment, testEnvironment, testStreamMaxBytes, waitFor } from "@ovation/testkit";
import { type ServiceProcess, startServiceProcess } from "@ovation/testkit/bench";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type GiftApp, startGift } from "../src/main.ts";
import { codeOf, fastRetries } from "./helpers.ts";

const walletMain = resolve(import.meta.dirname, "../../wallet/src/main.ts");
const walletCli = resolve(import.meta.dirname, "../../wallet/src/cli.ts");
const run = promisify(execFile);
const hostShareBps = 7_000n;

let env: TestEnvironment;
let wallet: ServiceProcess;
let gift: GiftApp;
let db: pg.Client;
let tokens: { admin: string; host: string };

const walletEnv = () => ({ ...env.env, ...fastRetries, WALLET_CREDIT_BATCH_MAX: "8", LOG_LEVEL: "error" });
const client = <S extends Parameters<typeof createClient>[0]>(service: S, url: string, token: string) =>
  createClient(
    service,
    createGrpcTransport({ baseUrl: url, interceptors: [bearerInterceptor(() => token)] }),
  );
const key = () => crypto.randomUUID();

async function coins(userId: string): Promise<bigint> {
  const { rows } = await db.query<{ amount: string }>(
    "select coalesce(sum(balance), 0)::text as amount from wallet.accounts where owner = $1 and asset = 'COIN'",
    [`user:${userId}`],
  );
  return BigInt(rows[0]!.amount);
}

async function inTransit(): Promise<bigint> {
  const { rows } = await db.query<{ amount: string }>(
    "select coalesce(sum(balance), 0)::text as amount from wallet.accounts where owner = 'system:gifts-in-transit'",
  );
  return BigInt(rows[0]!.amount);
}

async function fundedViewer(name: string, amount: bigint) {
  await client(WalletService, wallet.url, tokens.admin).mint({
    userId: name,
    money: { asset: "COIN", amount },
    idempotencyKey: key(),
  });
  return client(GiftService, gift.server.url, await env.token(name, ["user"]));
}

async function consumerSettled(): Promise<boolean> {
  const bus = await EventBus.connect({
    url: env.natsUrl,
    prefix: env.prefix,
    name: "observer",
    ...env.natsOps,
  });
  try {
    const info = await bus.jsm.consumers.info(bus.names.stream("GIFT"), "wallet-host-credit");
    return info.num_pending === 0 && info.num_ack_pending === 0;
  } finally {
    await bus.close();
  }
}

async function deadlocks(): Promise<number> {
  const { rows } = await db.query<{ n: string }>(
    "select deadlocks::text as n from pg_stat_database where datname = current_database()",
  );
  return Number(rows[0]!.n);
}

async function liveRoom(hostId: string): Promise<string> {
  const host = client(GiftService, gift.server.url, await env.token(hostId, ["user", "host"]));
  return (await host.startLive({ title: hostId })).room!.id;
}

beforeAll(async () => {
  env = await testEnvironment();
  wallet = await startServiceProcess(walletMain, walletEnv());
  gift = await startGift({ ...env.env, PORT: "0", WALLET_URL: wallet.url, ...fastRetries });
  db = new pg.Client({ connectionString: env.databaseUrl });
  await db.connect();
  tokens = { admin: await env.token("root", ["admin"]), host: await env.token("hana", ["user", "host"]) };
  const admin = client(GiftService, gift.server.url, tokens.admin);
  await admin.createGift({
    gift: {
      id: "rose",
      name: "Rose",
      price: 7n,
      pkPoints: 7n,
      vipOnly: false,
      minVipLevel: 0,
      animationKey: "rose",
    },
  });
});

afterAll(async () => {
  await gift?.close();
  await wallet?.stop();
  await db?.end();
  await env?.[Symbol.asyncDispose]();
});

describe("faults", () => {
  it("credits every gift exactly once when the wallet is killed mid-stream and restarted", async () => {
    const roomId = await liveRoom("crash-host");
    const viewer = await fundedViewer("crash-viewer", 10_000n);
    const share = (7n * hostShareBps) / 10_000n;
    const send = async (count: number) => {
      for (let i = 0; i < count; i += 20) {
        await Promise.all(
          Array.from({ length: 20 }, () =>
            viewer.sendGift({ roomId, giftId: "rose", count: 1, idempotencyKey: key() }),
          ),
        );
      }
    };
    // The first gifts are credited and committed before the kill.
    await send(40);
    await waitFor(async () => (await coins("crash-host")) === 40n * share, {
      timeoutMs: 20_000,
      what: "first credits",
    });
    // The host's account is held locked, so the next credit batch is in flight, inside the
    // wallet's transaction, when the wallet dies: neither guessed nor timed.
    const lock = new pg.Client({ connectionString: env.databaseUrl });
    await lock.connect();
    try {
      await lock.query("begin");
      await lock.query("select 1 from wallet.accounts where owner = 'user:crash-host' for update");
      await send(80);
      await waitFor(
        async () =>
          (
            await db.query(
              "select 1 from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock'",
            )
          ).rowCount! > 0,
        { timeoutMs: 20_000, what: "a credit batch waiting on the host's account" },
      );
      await wallet.stop("SIGKILL");
      await lock.query("commit");
    } finally {
      await lock.end();
    }
    const expected = 120n * share;
    expect(await coins("crash-host")).toBeLessThan(expected);
    wallet = await startServiceProcess(walletMain, walletEnv(), wallet.port);
    await waitFor(async () => (await coins("crash-host")) === expected, {
      timeoutMs: 20_000,
      what: "all credits",
    });
    // Nothing left to deliver or acknowledge: no redelivery can come and change the credit.
    await waitFor(consumerSettled, { timeoutMs: 20_000, what: "the host-credit consumer to settle" });
    expect(await coins("crash-host")).toBe(expected);
    const audit = await run(process.execPath, [walletCli, "audit"], { env: { ...process.env, ...env.env } });
    expect(audit.stdout).toContain("ledger audit passed");
  });

  it("fails a send cleanly while the wallet is down, and its retry is charged once", async () => {
    const roomId = await liveRoom("down-host");
    const viewer = await fundedViewer("down-viewer", 100n);
    const request = { roomId, giftId: "rose", count: 2, idempotencyKey: key() };
    await wallet.stop("SIGKILL");
    expect(await codeOf(viewer.sendGift(request))).toBe("Unavailable");
    wallet = await startServiceProcess(walletMain, walletEnv(), wallet.port);
    expect(await coins("down-viewer")).toBe(100n);
    expect((await viewer.sendGift(request)).balance).toBe(86n);
    expect((await viewer.sendGift(request)).balance).toBe(86n);
    expect(await coins("down-viewer")).toBe(86n);
  });

  it("dead-letters a gift no debit paid for at once, with its reason, while other gifts keep flowing", async () => {
    const bus = await EventBus.connect({
      url: env.natsUrl,
      prefix: env.prefix,
      name: "poisoner",
      streamMaxBytes: testStreamMaxBytes,
      ...env.natsOps,
    });
    try {
      const poisonId = crypto.randomUUID();
      const poison = create(GiftSentSchema, {
        sendId: poisonId,
        senderId: "nobody",
        hostId: "greedy-host", // published straight to the stream: no debit paid for it
        roomId: crypto.randomUUID(),
        giftId: "rose",
        count: 1,
        total: 7n,
        sendTime: timestampNow(),
      });
      const headers = natsHeaders();
      headers.set(headerNames.eventId, poisonId);
      await bus.js.publish(bus.names.subject("gift.gift.sent"), toBinary(GiftSentSchema, poison), {
        msgID: poisonId,
        headers,
      });

      const roomId = await liveRoom("poison-host");
      const viewer = await fundedViewer("poison-viewer", 70n);
      await viewer.sendGift({ roomId, giftId: "rose", count: 10, idempotencyKey: key() });
      await waitFor(async () => (await coins("poison-host")) === 49n, { what: "the healthy gift's credit" });

      const dlq = client(DlqService, wallet.url, tokens.admin);
      const entry = await waitFor(
        async () => (await dlq.listDlqEntries({})).entries.find((e) => e.eventId === poisonId),
        { timeoutMs: 15_000, what: "the DLQ entry" },
      );
      expect(entry.consumer).toBe("wallet-host-credit");
      // Nothing a retry could fix: rejected on its first delivery (retries are for failures).
      expect(entry.deliveries).toBe(1);
      expect(entry.reason).toMatch(/RejectedEventError: no gift debit carried event/);
      expect(await coins("greedy-host")).toBe(0n);
      await dlq.discardDlqEntry({ id: entry.id });
      expect((await dlq.listDlqEntries({})).entries.some((e) => e.id === entry.id)).toBe(false);
    } finally {
      await bus.close();
    }
  });

  it("takes locks in one order: hosts sending gifts while their credits land cause no deadlock", async () => {
    const hosts = ["duel-a", "duel-b", "duel-c", "duel-d"];
    const rooms = await Promise.all(hosts.map(liveRoom));
    // Every host is also a viewer of the others: its one account row is debited by its sends
    // and credited by host-credit batches at the same time.
    const senders = await Promise.all(hosts.map((host) => fundedViewer(host, 10_000n)));
    const deadlocksBefore = await deadlocks();
    const outcomes = await Promise.all(
      senders.flatMap((sender, s) =>
        Array.from({ length: 40 }, (_, i) =>
          codeOf(
            sender.sendGift({
              roomId: rooms[(s + 1 + (i % 3)) % hosts.length]!,
              giftId: "rose",
              count: 1,
              idempotencyKey: key(),
            }),
          ),
        ),
      ),
    );
    expect(outcomes.filter((code) => code !== "ok")).toEqual([]);
    await waitFor(async () => (await inTransit()) === 0n, { timeoutMs: 20_000, what: "every credit" });
    expect(await deadlocks()).toBe(deadlocksBefore);
    // Each host sent 40 roses (7 each) and received 40 (70 % credited).
    for (const host of hosts)
      expect(await coins(host)).toBe(10_000n - 40n * 7n + 40n * ((7n * hostShareBps) / 10_000n));
  });

  it("conserves money through a storm: host credits plus revenue equal what senders paid", async () => {
    const rooms = await Promise.all(["storm-a", "storm-b", "storm-c"].map(liveRoom));
    const viewers = await Promise.all(
      Array.from({ length: 8 }, (_, i) => fundedViewer(`storm-${i}`, 1_000n)),
    );
    await Promise.all(
      viewers.flatMap((viewer, v) =>
        Array.from({ length: 25 }, (_, i) =>
          viewer.sendGift({
            roomId: rooms[(v + i) % 3]!,
            giftId: "rose",
            count: 1 + (i % 4),
            idempotencyKey: key(),
          }),
        ),
      ),
    );
    await waitFor(async () => (await inTransit()) === 0n, {
      timeoutMs: 20_000,
      what: "gifts-in-transit to drain",
    });
    const { rows } = await db.query<{ kind: number; amount: string }>(
      "select kind, sum(amount)::text as amount from wallet.transfers where kind in (4, 5, 6) group by kind",
    );
    const byKind = Object.fromEntries(rows.map((r) => [r.kind, BigInt(r.amount)]));
    expect(byKind[4]! + byKind[6]!).toBe(byKind[5]); // EARN + REVENUE = GIFT
    const audit = await run(process.execPath, [walletCli, "audit"], { env: { ...process.env, ...env.env } });
    expect(audit.stdout).toContain("ledger audit passed");
  });
});
