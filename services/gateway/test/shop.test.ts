// The shop through the front door: products and carts over REST.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { call, type GatewayHarness, startGatewayHarness } from "./helpers.ts";

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
});
