// Proves live feeds survive a NATS outage longer than the server keeps an idle ephemeral
// consumer (60 s): a gateway and a gift replica reach NATS through a fault proxy that is cut
// for 90 s. Afterwards the gateway delivers room alerts again (its feed consumer was recreated)
// and the gift replica knows a gift created while it was cut off (its catalog re-synced),
// within seconds of NATS coming back rather than never (alerts) or a minute later (catalog).
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { bearerInterceptor } from "@ovation/auth";
import { type GiftApp, startGift } from "@ovation/gift";
import { GiftService } from "@ovation/proto/gen/ovation/gift/v1/gift_pb.ts";
import { WalletService } from "@ovation/proto/gen/ovation/wallet/v1/wallet_pb.ts";
import { FaultProxy, type TestEnvironment, testEnvironment, waitFor } from "@ovation/testkit";
import { startWallet, type Wallet } from "@ovation/wallet";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Gateway, startGateway } from "../src/main.ts";
import { openSocket } from "./helpers.ts";

/** Longer than the 60 s after which the server drops an ephemeral consumer nobody pulls from. */
const outageMs = 90_000;
/** How soon after NATS is back the feeds must work again. */
const recoveryMs = 10_000;

let env: TestEnvironment;
let proxy: FaultProxy;
const opened: { close(): Promise<void> }[] = [];
let wallet: Wallet;
let gift: GiftApp;
let cutOffGift: GiftApp;
let gateway: Gateway;

beforeAll(async () => {
  env = await testEnvironment();
  proxy = await FaultProxy.start(env.natsUrl);
  const direct = { ...env.env, PORT: "0" };
  const cutOff = { ...direct, NATS_URL: proxy.url(env.natsUrl) };
  wallet = await startWallet(direct);
  opened.push(wallet);
  gift = await startGift({ ...direct, WALLET_URL: wallet.server.url });
  opened.push(gift);
  cutOffGift = await startGift({ ...cutOff, WALLET_URL: wallet.server.url });
  opened.push(cutOffGift);
  gateway = await startGateway({ ...cutOff, WALLET_URL: wallet.server.url, GIFT_URL: gift.server.url });
  opened.push(gateway);
});

afterAll(async () => {
  for (const app of opened.reverse()) await app.close();
  await proxy?.close();
  await env?.[Symbol.asyncDispose]();
});

const client = <S extends Parameters<typeof createClient>[0]>(service: S, url: string, token: string) =>
  createClient(
    service,
    createGrpcTransport({ baseUrl: url, interceptors: [bearerInterceptor(() => token)] }),
  );

describe("a 90 s NATS outage", () => {
  it(
    "leaves room alerts and catalog refresh working again once NATS is back",
    async () => {
      const admin = await env.token("root", ["admin"]);
      const catalog = client(GiftService, gift.server.url, admin);
      await catalog.createGift({
        gift: {
          id: "rose",
          name: "Rose",
          price: 3n,
          pkPoints: 3n,
          vipOnly: false,
          minVipLevel: 0,
          animationKey: "rose",
        },
      });
      const host = client(GiftService, gift.server.url, await env.token("nats-host", ["user", "host"]));
      const roomId = (await host.startLive({ title: "through the outage" })).room!.id;
      await client(WalletService, wallet.server.url, admin).mint({
        userId: "nats-viewer",
        money: { asset: "COIN", amount: 100n },
        idempotencyKey: "seed",
      });
      const viewer = client(GiftService, gift.server.url, await env.token("nats-viewer", ["user"]));
      const socket = await openSocket(gateway.url, { token: await env.token("watcher", ["user"]) });
      socket.send({ op: "subscribe", channel: `room:${roomId}` });
      await socket.next((m) => m.type === "subscribed");
      await viewer.sendGift({ roomId, giftId: "rose", count: 1, idempotencyKey: "before" });
      await socket.next((m) => m.type === "gift.sent" && m.data.count === 1);

      proxy.cut();
      await new Promise((resolve) => setTimeout(resolve, outageMs - 2_000));
      // Created while the cut-off replica cannot hear about it, late enough that its 60 s
      // safety-net reload (last run ~60 s after start, next ~120 s) cannot find it in time.
      await catalog.createGift({
        gift: {
          id: "tulip",
          name: "Tulip",
          price: 4n,
          pkPoints: 4n,
          vipOnly: false,
          minVipLevel: 0,
          animationKey: "tulip",
        },
      });
      await new Promise((resolve) => setTimeout(resolve, 2_000));
      proxy.restore();

      const cutOffCatalog = client(GiftService, cutOffGift.server.url, admin);
      await waitFor(async () => (await cutOffCatalog.listGifts({})).gifts.some((g) => g.id === "tulip"), {
        timeoutMs: recoveryMs,
        what: "the cut-off replica to learn the gift created during the outage",
      });
      // Alerts flow again: keep sending until one reaches the socket through the recreated feed.
      await waitFor(
        async () => {
          await viewer.sendGift({ roomId, giftId: "tulip", count: 2, idempotencyKey: crypto.randomUUID() });
          return socket.messages.some((m) => m.type === "gift.sent" && m.data.giftId === "tulip");
        },
        { timeoutMs: recoveryMs, intervalMs: 500, what: "a room alert after the outage" },
      );
      expect(socket.messages.filter((m) => m.type === "gift.sent").length).toBeGreaterThanOrEqual(2);
      socket.close();
    },
    outageMs + 60_000,
  );
});
