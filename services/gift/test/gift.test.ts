// Proves gifting end to end against the real wallet, Postgres and NATS: the sender is debited
// at once, the host is credited and the leaderboards and gift log update within a second;
// refused sends change nothing and publish nothing; retries send once; combos count up. The
// gift service pays with service tokens signed by its own key, and starts with no other key.
import {
  GiftDirection,
  GiftService,
  LeaderboardPeriod,
  RoomStatus,
} from "@ovation/proto/gen/ovation/gift/v1/gift_pb.ts";
import { WalletService } from "@ovation/proto/gen/ovation/wallet/v1/wallet_pb.ts";
import { waitFor } from "@ovation/testkit";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { sendGift } from "../src/app/send-gift.ts";
import { startGift } from "../src/main.ts";
import { answerHeldBack, codeOf, fastRetries, type GiftHarness, startGiftHarness } from "./helpers.ts";

let h: GiftHarness;
let admin: ReturnType<typeof giftClient>;
let adminWallet: ReturnType<typeof walletClient>;
let host: ReturnType<typeof giftClient>;
let viewer: ReturnType<typeof giftClient>;
let roomId: string;
const giftClient = (token?: string) => h.client(GiftService, h.gift.server.url, token);
const walletClient = (token?: string) => h.client(WalletService, h.wallet.server.url, token);
const key = () => crypto.randomUUID();
const coinsOf = async (userId: string) =>
  (await adminWallet.getBalances({ userId })).balances.find((b) => b.asset === "COIN")?.amount ?? 0n;
const gift = (id: string, price: bigint, extra: object = {}) => ({
  gift: { id, name: id, price, pkPoints: price, vipOnly: false, minVipLevel: 0, animationKey: id, ...extra },
});

async function giftsSentInStream(): Promise<number> {
  const { bus } = h.gift;
  const subject = bus.names.subject("gift.gift.sent");
  const info = await bus.jsm.streams.info(bus.names.stream("GIFT"), { subjects_filter: subject });
  return Number(info.state.subjects?.[subject] ?? 0);
}

async function walletOutboxDrained(): Promise<boolean> {
  return (await h.wallet.orm.em.fork().execute("select 1 from outbox")).length === 0;
}

beforeAll(async () => {
  h = await startGiftHarness();
  admin = giftClient(await h.env.token("root", ["admin"]));
  adminWallet = walletClient(await h.env.token("root", ["admin"]));
  host = giftClient(await h.env.token("hana", ["user", "host"]));
  viewer = giftClient(await h.env.token("vic", ["user"]));
  await admin.createGift(gift("rose", 10n));
  await admin.createGift(gift("crown", 500n, { vipOnly: true, minVipLevel: 2 }));
  await admin.createGift(gift("retired", 1n));
  await admin.retireGift({ giftId: "retired" });
  roomId = (await host.startLive({ title: "evening show" })).room!.id;
  await adminWallet.mint({ userId: "vic", money: { asset: "COIN", amount: 1_000n }, idempotencyKey: key() });
});
afterAll(() => h?.close());

describe("send gift", () => {
  it("debits at once, credits the host and updates leaderboards and history within a second", async () => {
    const sent = await viewer.sendGift({ roomId, giftId: "rose", count: 3, idempotencyKey: key() });
    expect(sent.balance).toBe(970n);
    expect(sent.gift?.total).toBe(30n);
    expect(await coinsOf("vic")).toBe(970n);
    const started = Date.now();
    await waitFor(async () => (await coinsOf("hana")) === 21n, {
      timeoutMs: 1_000,
      what: "host credit (70% of 30)",
    });
    await waitFor(async () => (await host.getRoomLeaderboard({ roomId })).entries[0]?.amount === 30n, {
      timeoutMs: 1_000,
      what: "room leaderboard",
    });
    expect(Date.now() - started).toBeLessThan(1_000);
    const hosts = await viewer.getHostLeaderboard({ period: LeaderboardPeriod.DAY });
    expect(hosts.entries[0]).toMatchObject({ rank: 1, userId: "hana", amount: 30n });
    expect((await viewer.getHostLeaderboard({ period: LeaderboardPeriod.ALL })).entries[0]?.userId).toBe(
      "hana",
    );
    const mine = await viewer.listGiftHistory({});
    expect(mine.gifts[0]).toMatchObject({ id: sent.gift?.id, giftId: "rose", count: 3, total: 30n });
    const received = await host.listGiftHistory({ direction: GiftDirection.RECEIVED });
    expect(received.gifts[0]?.senderId).toBe("vic");
  });

  it("refuses what it must with a clear code, publishes nothing and changes no balance", async () => {
    const before = await coinsOf("vic");
    const published = await giftsSentInStream();
    const send = (request: { roomId?: string; giftId?: string; count?: number }, client = viewer) =>
      codeOf(client.sendGift({ roomId, giftId: "rose", count: 1, idempotencyKey: key(), ...request }));
    expect(await send({ count: 1_000 })).toBe("FailedPrecondition"); // 10 000 coins > balance
    expect(await send({ giftId: "tulip" })).toBe("NotFound");
    expect(await send({ giftId: "retired" })).toBe("FailedPrecondition");
    expect(await send({ giftId: "crown" })).toBe("PermissionDenied");
    expect(await send({ count: 0 })).toBe("InvalidArgument");
    expect(await send({ count: 10_000 })).toBe("InvalidArgument");
    expect(await send({ roomId: "nope" })).toBe("InvalidArgument");
    expect(await send({ roomId: crypto.randomUUID() })).toBe("NotFound");
    expect(await send({}, host)).toBe("FailedPrecondition"); // a host cannot gift themselves
    expect(await send({}, giftClient())).toBe("Unauthenticated");
    const ended = (await giftClient(await h.env.token("eve", ["host"])).startLive({ title: "" })).room!;
    await giftClient(await h.env.token("eve", ["host"])).endLive({ roomId: ended.id });
    expect(await send({ roomId: ended.id })).toBe("FailedPrecondition");
    expect(await coinsOf("vic")).toBe(before);
    // Once the wallet's relay has nothing left to publish, the stream holds all there will be.
    await waitFor(walletOutboxDrained, { what: "the wallet's outbox to drain" });
    expect(await giftsSentInStream()).toBe(published);
  });

  it("pays at most once under a key, even when a retry runs while the first hears its refusal", async () => {
    const command = {
      senderId: "zed",
      vipLevel: 0,
      roomId,
      giftId: "rose",
      count: 1,
      idempotencyKey: key(),
      consentToken: await h.env.token("zed", ["user"]),
    };
    const { sends } = h.gift;
    const late = answerHeldBack(sends.payments);
    // zed has no coins: the first attempt is refused, and hears it late.
    const first = sendGift({ ...sends, payments: late.payments }, command).catch((error: unknown) => error);
    await late.firstAnswered;
    await adminWallet.mint({ userId: "zed", money: { asset: "COIN", amount: 100n }, idempotencyKey: key() });
    // A retry meanwhile pays under the same claim.
    const second = await sendGift(sends, command);
    late.letGo();
    expect(await first).toMatchObject({ code: "insufficient_balance" });
    // Another retry after the refusal was heard finds the paid claim, and pays nothing more.
    const third = await sendGift(sends, command);
    expect(third.gift.sendId).toBe(second.gift.sendId);
    expect(await coinsOf("zed")).toBe(90n);
  });

  it("pages gift history and refuses page tokens it never issued", async () => {
    for (let i = 0; i < 3; i++)
      await viewer.sendGift({ roomId, giftId: "rose", count: 1, idempotencyKey: key() });
    await waitFor(async () => (await viewer.listGiftHistory({ pageSize: 100 })).gifts.length >= 4, {
      what: "the gift log",
    });
    const first = await viewer.listGiftHistory({ pageSize: 2 });
    const second = await viewer.listGiftHistory({ pageSize: 2, pageToken: first.nextPageToken });
    expect(second.gifts[0]?.id).not.toBe(first.gifts[1]?.id);
    const token = (text: string) => Buffer.from(text).toString("base64url");
    const hostile = [
      token(`2026-11-22T00:00:00.000Z|${"-".repeat(36)}`), // 36 dashes pass a loose UUID pattern
      token(`-100000-01-01T00:00:00.000Z|${crypto.randomUUID()}`), // before Postgres' first year
      token(`+275760-09-13T00:00:00.000Z|${crypto.randomUUID()}`),
      token(`2026-11-22|${crypto.randomUUID()}`), // not the form this service writes
      token(`2026-11-22T00:00:00.000Z|${crypto.randomUUID()}|extra`),
      `${first.nextPageToken}=`,
      "not base64 at all!",
    ];
    for (const pageToken of hostile) {
      expect(await codeOf(viewer.listGiftHistory({ pageSize: 2, pageToken })), pageToken).toBe(
        "InvalidArgument",
      );
    }
  });

  it("lets a VIP send a VIP gift", async () => {
    await adminWallet.mint({ userId: "vip", money: { asset: "COIN", amount: 500n }, idempotencyKey: key() });
    const vip = giftClient(await h.env.token("vip", ["user"], 2));
    const sent = await vip.sendGift({ roomId, giftId: "crown", count: 1, idempotencyKey: key() });
    expect(sent.balance).toBe(0n);
  });

  it("sends once for the same idempotency key, and refuses the key for another request", async () => {
    const request = { roomId, giftId: "rose", count: 2, idempotencyKey: key() };
    const before = await coinsOf("vic");
    const [first, second] = await Promise.all([viewer.sendGift(request), viewer.sendGift(request)]);
    const third = await viewer.sendGift(request);
    expect(new Set([first.gift?.id, second.gift?.id, third.gift?.id]).size).toBe(1);
    expect(await coinsOf("vic")).toBe(before - 20n);
    expect(await codeOf(viewer.sendGift({ ...request, count: 3 }))).toBe("AlreadyExists");
  });

  it("counts combos for the same gift in the same room within the window", async () => {
    const combos = [];
    for (let i = 0; i < 3; i++) {
      combos.push(
        (await viewer.sendGift({ roomId, giftId: "rose", count: 1, idempotencyKey: key() })).gift?.combo,
      );
    }
    expect(combos.at(-1)! - combos[0]!).toBe(2);
    // Past the window (the streak's last send moved back 11 s), the streak starts again.
    await h.gift.orm.em
      .fork()
      .execute("update combos set last_at = last_at - interval '11 seconds' where sender_id = 'vic'");
    const after = await viewer.sendGift({ roomId, giftId: "rose", count: 1, idempotencyKey: key() });
    expect(after.gift?.combo).toBe(1);
  });

  it("answers the retry of a paid send with its first result even after the room ended", async () => {
    const ending = giftClient(await h.env.token("short-show", ["user", "host"]));
    const shortRoom = (await ending.startLive({ title: "short" })).room!.id;
    const request = { roomId: shortRoom, giftId: "rose", count: 2, idempotencyKey: key() };
    const first = await viewer.sendGift(request);
    await ending.endLive({ roomId: shortRoom });
    // A new send to the ended room is refused; the retry of the paid one is not.
    expect(await codeOf(viewer.sendGift({ ...request, idempotencyKey: key() }))).toBe("FailedPrecondition");
    const retried = await viewer.sendGift(request);
    expect(retried.gift?.id).toBe(first.gift?.id);
    expect(retried.balance).toBe(first.balance);
    expect(await coinsOf("vic")).toBe(first.balance);
  });

  it("costs one statement in the gift database per send (claim_send), a refusal at most one more", async () => {
    const statements: string[] = [];
    const original = pg.Client.prototype.query;
    // Statements of the gift service's own connections (its search_path), minus its relay's,
    // consumers' and timers' background work.
    const background =
      /outbox|inbox|consumer_failures|gift_log|room_gifters|host_totals|ovation_jobs|^(begin|commit|rollback)/i;
    pg.Client.prototype.query = function (this: pg.Client, config: unknown, ...rest: unknown[]) {
      const text = typeof config === "string" ? config : ((config as { text?: string })?.text ?? "");
      const options = (this as unknown as { connectionParameters: { options?: string } }).connectionParameters
        .options;
      if (options?.includes("search_path=gift") && !background.test(text.trim())) statements.push(text);
      return (original as (...args: unknown[]) => unknown).call(this, config, ...rest);
    } as typeof pg.Client.prototype.query;
    try {
      for (let i = 0; i < 5; i++)
        await viewer.sendGift({ roomId, giftId: "rose", count: 1, idempotencyKey: key() });
      expect(statements.length).toBe(5);
      expect(statements.every((text) => text.includes("claim_send"))).toBe(true);
      statements.length = 0;
      expect(
        await codeOf(viewer.sendGift({ roomId, giftId: "retired", count: 1, idempotencyKey: key() })),
      ).toBe("FailedPrecondition");
      expect(statements.length).toBe(1);
    } finally {
      pg.Client.prototype.query = original;
    }
  });

  it("numbers a burst of concurrent sends 1..N, even when the first of them starts the streak", async () => {
    await adminWallet.mint({
      userId: "racer",
      money: { asset: "COIN", amount: 1_000n },
      idempotencyKey: key(),
    });
    const racer = giftClient(await h.env.token("racer", ["user"]));
    const burst = await Promise.all(
      Array.from({ length: 8 }, () =>
        racer.sendGift({ roomId, giftId: "rose", count: 1, idempotencyKey: key() }),
      ),
    );
    expect(burst.map((sent) => sent.gift!.combo).sort((a, b) => a - b)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
  });
});

describe("catalog and rooms", () => {
  it("refreshes another replica's cache through the catalog event, not a timer", async () => {
    const replica = await startGift({
      ...h.env.env,
      PORT: "0",
      WALLET_URL: h.wallet.server.url,
      ...fastRetries,
    });
    try {
      const other = h.client(GiftService, replica.server.url);
      expect((await other.listGifts({})).gifts.map((g) => g.id)).not.toContain("lily");
      await admin.createGift(gift("lily", 3n));
      await waitFor(async () => (await other.listGifts({})).gifts.some((g) => g.id === "lily"), {
        timeoutMs: 3_000,
        what: "the replica to see the new gift",
      });
      await admin.updateGift({ giftId: "lily", gift: { ...gift("lily", 4n).gift, name: "Lily" } });
      await waitFor(async () => (await other.listGifts({})).gifts.find((g) => g.id === "lily")?.price === 4n);
    } finally {
      await replica.close();
    }
  });

  it("keeps one live room per host and lets only its host end it", async () => {
    const again = await host.startLive({ title: "again" });
    expect(again.room?.id).toBe(roomId);
    expect((await viewer.getRoom({ roomId })).room?.status).toBe(RoomStatus.LIVE);
    expect(await codeOf(viewer.endLive({ roomId }))).toBe("PermissionDenied");
    expect(await codeOf(viewer.startLive({ title: "x" }))).toBe("PermissionDenied");
    expect(await codeOf(viewer.createGift(gift("hack", 1n)))).toBe("PermissionDenied");
    // The gift id is the key: the same definition again is the first result, another is refused.
    const retried = await admin.createGift(gift("rose", 10n));
    expect(retried.gift).toMatchObject({ id: "rose", price: 10n, active: true });
    expect(await codeOf(admin.createGift(gift("rose", 1n)))).toBe("AlreadyExists");
  });
});

describe("service identity", () => {
  it("pays through the wallet with its own key, and the wallet knows the caller as gift", async () => {
    await adminWallet.mint({ userId: "ida", money: { asset: "COIN", amount: 50n }, idempotencyKey: key() });
    const ida = giftClient(await h.env.token("ida", ["user"]));
    const sent = await ida.sendGift({ roomId, giftId: "rose", count: 1, idempotencyKey: key() });
    expect(sent.balance).toBe(40n);
    // The wallet scopes idempotency keys by the verified caller: this row says who it saw.
    const db = new pg.Client({ connectionString: h.env.databaseUrl });
    await db.connect();
    try {
      const { rows } = await db.query(
        "select idempotency_key from wallet.transfers where idempotency_key like $1",
        [`%:send:${sent.gift!.id}`],
      );
      expect(rows).toEqual([{ idempotency_key: `service:gift:send:${sent.gift!.id}` }]);
    } finally {
      await db.end();
    }
  });

  it("will not start with another service's key, the issuer's key, or none", async () => {
    const env = { ...h.env.env, PORT: "0", WALLET_URL: h.wallet.server.url, ...fastRetries };
    await expect(startGift({ ...env, SERVICE_KEY_FILE: h.env.keys.service("wallet") })).rejects.toThrow(
      "is not service gift's",
    );
    await expect(startGift({ ...env, SERVICE_KEY_FILE: h.env.keys.issuer })).rejects.toThrow(
      "is not service gift's",
    );
    await expect(
      startGift({ ...env, OVATION_KEY_DIR: undefined, JWKS_FILE: h.env.keys.jwks }),
    ).rejects.toThrow("SERVICE_KEY_FILE: missing");
  });
});
