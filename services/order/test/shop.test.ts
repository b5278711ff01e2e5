// The shop against real Postgres: products (admin), stock of limited items (inventory module,
// idempotent adjustments that never go below zero), and carts with their bounds.

import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { bearerInterceptor } from "@ovation/auth";
import { OrderService, ProductKind } from "@ovation/proto/gen/ovation/order/v1/order_pb.ts";
import { codeOf, type TestEnvironment, testEnvironment } from "@ovation/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type OrderApp, startOrder } from "../src/main.ts";

let env: TestEnvironment;
let app: OrderApp;
let admin: ReturnType<typeof shop>;
const shop = (token?: string) =>
  createClient(
    OrderService,
    createGrpcTransport({
      baseUrl: app.server.url,
      interceptors: token ? [bearerInterceptor(() => token)] : [],
    }),
  );
const badge = {
  id: "golden-badge",
  name: "Golden badge",
  kind: ProductKind.ITEM,
  priceCoins: 500n,
  priceToman: 90_000n,
  coins: 0n,
  active: true,
};
const pack = {
  id: "coins-1000",
  name: "1000 coins",
  kind: ProductKind.COIN_PACK,
  priceCoins: 0n,
  priceToman: 150_000n,
  coins: 1_000n,
  active: true,
};

beforeAll(async () => {
  env = await testEnvironment();
  app = await startOrder({ ...env.env, PORT: "0" });
  admin = shop(await env.token("ops", ["admin"]));
});
afterAll(async () => {
  await app?.close();
  await env?.[Symbol.asyncDispose]();
});

describe("products", () => {
  it("are created once by id, listed with their stock, and refused when they cannot be sold", async () => {
    expect((await admin.createProduct({ product: badge })).product).toMatchObject({
      id: badge.id,
      available: 0n,
    });
    expect((await admin.createProduct({ product: badge })).product?.id).toBe(badge.id);
    expect(await codeOf(admin.createProduct({ product: { ...badge, priceCoins: 1n } }))).toBe(
      "AlreadyExists",
    );
    await admin.createProduct({ product: pack });
    expect(await codeOf(admin.createProduct({ product: { ...pack, id: "bad-pack", priceCoins: 5n } }))).toBe(
      "InvalidArgument",
    );
    expect(
      await codeOf(
        admin.createProduct({ product: { ...badge, id: "free", priceCoins: 0n, priceToman: 0n } }),
      ),
    ).toBe("InvalidArgument");
    expect(await codeOf(admin.createProduct({ product: { ...badge, id: "Bad Id" } }))).toBe(
      "InvalidArgument",
    );
    const user = shop(await env.token("vic", ["user"]));
    expect(await codeOf(user.createProduct({ product: { ...badge, id: "mine" } }))).toBe("PermissionDenied");

    await admin.adjustStock({ productId: badge.id, delta: 10n, idempotencyKey: "restock-1" });
    await admin.adjustStock({ productId: badge.id, delta: 10n, idempotencyKey: "restock-1" }); // a retry
    expect(
      (await admin.adjustStock({ productId: badge.id, delta: -3n, idempotencyKey: "shrink-1" })).product
        ?.available,
    ).toBe(7n);
    expect(
      await codeOf(admin.adjustStock({ productId: badge.id, delta: -8n, idempotencyKey: "too-much" })),
    ).toBe("FailedPrecondition");
    expect(await codeOf(admin.adjustStock({ productId: pack.id, delta: 5n, idempotencyKey: "pack" }))).toBe(
      "FailedPrecondition",
    );
    const listed = (await shop().listProducts({})).products;
    expect(listed.map((p) => [p.id, p.available])).toEqual([
      ["coins-1000", 0n],
      ["golden-badge", 7n],
    ]);
    await admin.updateProduct({
      productId: pack.id,
      name: pack.name,
      priceCoins: 0n,
      priceToman: 150_000n,
      active: false,
    });
    expect((await shop().listProducts({})).products.map((p) => p.id)).toEqual(["golden-badge"]);
    await admin.updateProduct({
      productId: pack.id,
      name: pack.name,
      priceCoins: 0n,
      priceToman: 150_000n,
      active: true,
    });
  });

  it("take concurrent stock adjustments without losing one or going below zero", async () => {
    await admin.createProduct({ product: { ...badge, id: "crown" } });
    await Promise.all(
      Array.from({ length: 40 }, (_, i) =>
        admin.adjustStock({ productId: "crown", delta: 5n, idempotencyKey: `add-${i}` }),
      ),
    );
    const removals = await Promise.all(
      Array.from({ length: 60 }, (_, i) =>
        codeOf(admin.adjustStock({ productId: "crown", delta: -5n, idempotencyKey: `remove-${i}` })),
      ),
    );
    expect(removals.filter((code) => code === "FailedPrecondition")).toHaveLength(20);
    const crown = (await shop().listProducts({})).products.find((p) => p.id === "crown");
    expect(crown?.available).toBe(0n);
  });
});

describe("carts", () => {
  it("add, change, remove and total, within their bounds, per user", async () => {
    const vic = shop(await env.token("vic", ["user"]));
    await vic.addToCart({ productId: badge.id, quantity: 2 });
    await vic.addToCart({ productId: pack.id, quantity: 1 });
    const added = (await vic.addToCart({ productId: badge.id, quantity: 1 })).cart!;
    expect(added.lines.map((l) => [l.product?.id, l.quantity])).toEqual([
      ["golden-badge", 3],
      ["coins-1000", 1],
    ]);
    expect([added.totalCoins, added.totalToman]).toEqual([1_500n, 420_000n]);
    expect((await vic.updateCartItem({ productId: badge.id, quantity: 5 })).cart?.lines[0]?.quantity).toBe(5);
    expect(await codeOf(vic.updateCartItem({ productId: badge.id, quantity: 100 }))).toBe("InvalidArgument");
    expect(await codeOf(vic.addToCart({ productId: badge.id, quantity: 99 }))).toBe("OutOfRange");
    expect(await codeOf(vic.addToCart({ productId: "nothing", quantity: 1 }))).toBe("NotFound");
    expect(await codeOf(vic.updateCartItem({ productId: "crown", quantity: 1 }))).toBe("NotFound");
    expect((await vic.removeCartItem({ productId: pack.id })).cart?.lines.map((l) => l.product?.id)).toEqual([
      "golden-badge",
    ]);
    expect((await vic.removeCartItem({ productId: pack.id })).cart?.lines).toHaveLength(1);
    const other = shop(await env.token("ann", ["user"]));
    expect((await other.getCart({})).cart?.lines).toEqual([]);

    for (let i = 0; i < 20; i++)
      await admin.createProduct({ product: { ...badge, id: `item-${i}`, name: `Item ${i}` } });
    for (let i = 0; i < 20; i++) await other.addToCart({ productId: `item-${i}`, quantity: 1 });
    expect(await codeOf(other.addToCart({ productId: badge.id, quantity: 1 }))).toBe("ResourceExhausted");
    expect((await other.getCart({})).cart?.lines).toHaveLength(20);
  });
});
