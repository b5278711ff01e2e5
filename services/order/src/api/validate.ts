// Every OrderService request is validated here before any use case runs.
import { PaymentMethod, ProductKind } from "@ovation/proto/gen/ovation/order/v1/order_pb.ts";
import { idempotencyKeyPattern } from "@ovation/server";
import { z } from "zod";
import { shopLimits } from "../domain/shop.ts";

const productId = z.string().regex(/^[a-z0-9-]{1,64}$/, "must be 1..64 of a-z, 0-9 and -");
const name = z.string().trim().min(1, "is required").max(shopLimits.nameMaxLength);
const price = z.bigint().min(0n).max(shopLimits.priceMax, "is too large");
const quantity = z
  .number()
  .int()
  .min(1, "must be at least 1")
  .max(shopLimits.lineQuantityMax, `must be at most ${shopLimits.lineQuantityMax}`);

export const requestSchemas = {
  createProduct: z.object({
    product: z.object(
      {
        id: productId,
        name,
        kind: z.enum(ProductKind).refine((k) => k !== ProductKind.UNSPECIFIED, "must be ITEM or COIN_PACK"),
        priceCoins: price,
        priceToman: price,
        coins: z.bigint().min(0n).max(shopLimits.coinsMax, "is too large"),
        active: z.boolean(),
      },
      { error: "is required" },
    ),
  }),
  updateProduct: z.object({ productId, name, priceCoins: price, priceToman: price, active: z.boolean() }),
  adjustStock: z.object({
    productId,
    delta: z
      .bigint()
      .min(-shopLimits.stockDeltaMax)
      .max(shopLimits.stockDeltaMax)
      .refine((d) => d !== 0n, "must not be 0"),
    idempotencyKey: z
      .string()
      .regex(idempotencyKeyPattern, "must be 1..128 printable ASCII characters, no spaces"),
  }),
  addToCart: z.object({ productId, quantity }),
  updateCartItem: z.object({ productId, quantity }),
  removeCartItem: z.object({ productId }),
  createOrder: z.object({
    items: z
      .array(z.object({ productId, quantity }))
      .max(shopLimits.cartLinesMax, `must hold at most ${shopLimits.cartLinesMax} products`)
      .refine(
        (items) => new Set(items.map((i) => i.productId)).size === items.length,
        "must not repeat a product",
      ),
    paymentMethod: z
      .enum(PaymentMethod)
      .refine((m) => m !== PaymentMethod.UNSPECIFIED, "must be WALLET or CARD"),
    idempotencyKey: z
      .string()
      .regex(idempotencyKeyPattern, "must be 1..128 printable ASCII characters, no spaces"),
  }),
  listOrders: z.object({ pageSize: z.number().int().min(0).max(50), pageToken: z.string().max(200) }),
  getOrder: z.object({ orderId: z.uuid("must be a UUID") }),
};

export { validateRequest as validate } from "@ovation/server";
