// Soak (bounded): 2,000 orders, 30 % of card charges declined, while the inventory's reserving
// consumer is stopped and started again twice. Every order must end COMPLETED or FAILED, every
// product's stock must add up (available + reserved + sold = what was stocked, nothing left
// reserved), coins must move only for completed orders, and the ledger audit must pass.
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { bearerInterceptor } from "@ovation/auth";
import { OrderService, PaymentMethod, ProductKind } from "@ovation/proto/gen/ovation/order/v1/order_pb.ts";
import { WalletService } from "@ovation/proto/gen/ovation/wallet/v1/wallet_pb.ts";
import { type TestEnvironment, testEnvironment, waitFor } from "@ovation/testkit";
import { auditLedger, startWallet, type Wallet } from "@ovation/wallet";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type OrderApp, startOrder } from "../src/main.ts";

const orders = 2_000;
const users = 100;
const products = 5;
const stocked = 300n;
let env: TestEnvironment;
let wallet: Wallet;
let app: OrderApp;

beforeAll(async () => {
  env = await testEnvironment();
  const settings = {
    ...env.env,
    PORT: "0",
    EVENTS_RETRY_BACKOFF_MS: "50,100,200",
    EVENTS_ACK_WAIT_MS: "1500",
  };
  wallet = await startWallet(settings);
  app = await startOrder({
    ...settings,
    WALLET_URL: wallet.server.url,
    ORDER_CARD_FAILURE_RATE: "0.3",
    ORDER_CARD_LATENCY_MS: "5",
    ORDER_CARD_SEED: "soak",
  });
});
afterAll(async () => {
  await app?.close();
  await wallet?.close();
  await env?.[Symbol.asyncDispose]();
});

describe("a soak of 2,000 orders", () => {
  it("ends every order, keeps every unit and coin accounted for, with the inventory consumer restarted twice", async () => {
    const transport = createGrpcTransport({ baseUrl: app.server.url });
    const shop = createClient(OrderService, transport);
    const adminToken = await env.token("ops", ["admin"]);
    const admin = { headers: { authorization: `Bearer ${adminToken}` } };
    for (let p = 0; p < products; p++) {
      await shop.createProduct(
        {
          product: {
            id: `soak-${p}`,
            name: `Soak ${p}`,
            kind: ProductKind.ITEM,
            priceCoins: 10n,
            priceToman: 1_000n,
            coins: 0n,
            active: true,
          },
        },
        admin,
      );
      await shop.adjustStock({ productId: `soak-${p}`, delta: stocked, idempotencyKey: `soak-${p}` }, admin);
    }
    const walletAdmin = createClient(
      WalletService,
      createGrpcTransport({
        baseUrl: wallet.server.url,
        interceptors: [bearerInterceptor(() => adminToken)],
      }),
    );
    const tokens: string[] = [];
    for (let u = 0; u < users; u++) {
      await walletAdmin.mint({
        userId: `s${u}`,
        money: { asset: "COIN", amount: 100n },
        idempotencyKey: `mint-${u}`,
      });
      tokens.push(await env.token(`s${u}`, ["user"]));
    }

    const inventory = app.consumers.get("inventory-reserve")!;
    const place = (i: number) =>
      shop.createOrder(
        {
          items: [{ productId: `soak-${i % products}`, quantity: 1 + (i % 2) }],
          paymentMethod: i % 10 < 7 ? PaymentMethod.CARD : PaymentMethod.WALLET,
          idempotencyKey: `soak-order-${i}`,
        },
        { headers: { authorization: `Bearer ${tokens[i % users]}` } },
      );
    for (let start = 0; start < orders; start += 100) {
      await Promise.all(Array.from({ length: 100 }, (_, k) => place(start + k)));
      if (start === 500 || start === 1_200) {
        await inventory.stop();
        await new Promise<void>((resolve) => setImmediate(resolve));
        await inventory.start();
      }
    }

    const db = app.orm.em;
    await waitFor(
      async () => {
        const [row] = await db
          .fork()
          .execute<{ n: number }[]>("select count(*)::int as n from orders where status in (3, 4)");
        return row!.n === orders;
      },
      { timeoutMs: 120_000, intervalMs: 250, what: "every order to end" },
    );
    await waitFor(
      async () => {
        const [row] = await db
          .fork()
          .execute<{ n: string }[]>("select coalesce(sum(reserved), 0)::text as n from inventory_stock");
        return row!.n === "0";
      },
      { timeoutMs: 30_000, what: "nothing left reserved" },
    );
    const stock = await db
      .fork()
      .execute<{ product_id: string; total: string; sold: string }[]>(
        "select product_id, (available + reserved + sold)::text as total, sold::text from inventory_stock order by 1",
      );
    expect(stock.map((s) => s.total)).toEqual(Array(products).fill(String(stocked)));
    const [sold] = await db.fork().execute<{ units: string }[]>(
      `select coalesce(sum((l->>'quantity')::int), 0)::text as units
         from orders o, jsonb_array_elements(o.lines) l where o.status = 3`,
    );
    expect(stock.reduce((sum, s) => sum + BigInt(s.sold), 0n)).toBe(BigInt(sold!.units));
    const outcomes = await db
      .fork()
      .execute<{ status: number; n: number }[]>(
        "select status, count(*)::int as n from orders group by 1 order by 1",
      );
    expect(outcomes.map((o) => o.status).every((s) => s === 3 || s === 4)).toBe(true);
    // Coins: each completed WALLET order captured its total, no more.
    const [paid] = await db
      .fork()
      .execute<{ coins: string }[]>(
        "select coalesce(sum(total), 0)::text as coins from orders where status = 3 and payment_method = 1",
      );
    await waitFor(async () => {
      const balances = await Promise.all(
        Array.from({ length: users }, async (_, u) =>
          (await walletAdmin.getBalances({ userId: `s${u}` })).balances.reduce(
            (sum, b) => sum + b.amount,
            0n,
          ),
        ),
      );
      return balances.reduce((sum, b) => sum + b, 0n) === BigInt(users) * 100n - BigInt(paid!.coins);
    });
    expect((await auditLedger(wallet.store)).ok).toBe(true);
  });
});
