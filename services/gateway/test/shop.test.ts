// The shop through the front door: products and carts over REST.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { call, type GatewayHarness, openSocket, startGatewayHarness } from "./helpers.ts";

let h: GatewayHarness;
let url: string;

beforeAll(async () => {
  h = await startGatewayHarness({}, {}, { order: {} });
  url = h.gateway.url;
});
afterAll(() => h?.close());

describe("the shop through the gateway", () => {
  it("lists products and keeps a cart over REST", async () => {
    const admin = await h.env.token("ops", ["admin"]);
    const user = await h.env.token("vic", ["user"]);
    const created = await call(url, "POST", "/api/admin/products", {
      token: admin,
      body: {
        product: {
          id: "rose-badge",
          name: "Rose badge",
          kind: "PRODUCT_KIND_ITEM",
          priceCoins: "300",
          active: true,
        },
      },
    });
    expect(created.status).toBe(200);
    const stocked = await call(url, "POST", "/api/admin/products/rose-badge/stock", {
      token: admin,
      body: { delta: "5", idempotencyKey: "first-stock" },
    });
    expect(stocked.body.product.available).toBe("5");
    expect((await call(url, "GET", "/api/products")).body.products).toEqual([
      expect.objectContaining({ id: "rose-badge", priceCoins: "300", available: "5" }),
    ]);
    const added = await call(url, "POST", "/api/cart/items", {
      token: user,
      body: { productId: "rose-badge", quantity: 2 },
    });
    expect(added.body.cart).toMatchObject({ totalCoins: "600", lines: [{ quantity: 2 }] });
    const changed = await call(url, "PATCH", "/api/cart/items/rose-badge", {
      token: user,
      body: { quantity: 3 },
    });
    expect(changed.body.cart.totalCoins).toBe("900");
    const removed = await call(url, "DELETE", "/api/cart/items/rose-badge", { token: user });
    expect(removed.body.cart.lines).toEqual([]);
    expect((await call(url, "GET", "/api/cart", { token: user })).body.cart.lines).toEqual([]);
    expect((await call(url, "GET", "/api/cart")).status).toBe(401);
    expect(
      (
        await call(url, "POST", "/api/cart/items", {
          token: user,
          body: { productId: "rose-badge", quantity: 0 },
        })
      ).status,
    ).toBe(400);
    expect(
      (await call(url, "POST", "/api/admin/products", { token: user, body: { product: {} } })).status,
    ).toBe(403);
  });

  it("places an order over REST, tells the buyer on the user channel, and shows its saga", async () => {
    const admin = await h.env.token("ops", ["admin"]);
    const buyer = await h.env.token("oli", ["user"]);
    await call(url, "POST", "/api/admin/products", {
      token: admin,
      body: {
        product: { id: "star", name: "Star", kind: "PRODUCT_KIND_ITEM", priceCoins: "40", active: true },
      },
    });
    await call(url, "POST", "/api/admin/products/star/stock", {
      token: admin,
      body: { delta: "3", idempotencyKey: "s" },
    });
    await call(url, "POST", "/api/admin/wallet/mint", {
      token: admin,
      body: { userId: "oli", money: { asset: "COIN", amount: "100" }, idempotencyKey: crypto.randomUUID() },
    });
    const socket = await openSocket(url, { token: buyer });
    await socket.next((m) => m.type === "authenticated");
    socket.send({ op: "subscribe", channel: "user" });
    await socket.next((m) => m.type === "subscribed");

    const placed = await call(url, "POST", "/api/orders", {
      token: buyer,
      body: { items: [{ productId: "star", quantity: 2 }], paymentMethod: "PAYMENT_METHOD_WALLET" },
      headers: { "idempotency-key": "order-1" },
    });
    expect(placed.status).toBe(200);
    const orderId: string = placed.body.order.id;
    const completed = await socket.next(
      (m) => m.type === "order.status" && m.data.id === orderId && m.data.status === "ORDER_STATUS_COMPLETED",
      10_000,
    );
    expect(completed.data.total).toEqual({ asset: "COIN", amount: "80" });
    socket.close();
    const shown = await call(url, "GET", `/api/orders/${orderId}`, { token: buyer });
    expect(shown.body.order.history.map((s: { step: string }) => s.step)).toEqual([
      "order.created",
      "inventory.reserved",
      "payment.succeeded",
    ]);
    expect((await call(url, "GET", "/api/orders", { token: buyer })).body.orders).toHaveLength(1);
    const other = await h.env.token("eve", ["user"]);
    expect((await call(url, "GET", `/api/orders/${orderId}`, { token: other })).status).toBe(404);
    expect(
      (
        await call(url, "POST", "/api/orders", {
          token: buyer,
          body: { paymentMethod: "PAYMENT_METHOD_WALLET" },
        })
      ).status,
    ).toBe(400);
  });
});
