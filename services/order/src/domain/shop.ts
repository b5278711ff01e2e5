// Pure shop rules: limits, errors, cart totals. No I/O.

import { defineErrors } from "@ovation/errors";
import { ProductKind } from "@ovation/proto/gen/ovation/order/v1/order_pb.ts";

export const shopLimits = {
  nameMaxLength: 64,
  priceMax: 1_000_000_000n,
  coinsMax: 1_000_000_000n,
  cartLinesMax: 20,
  lineQuantityMax: 99,
  stockDeltaMax: 1_000_000n,
} as const;

/** The shop domain's operating errors, each with the kind of failure it is (@ovation/errors). */
export const ShopError = defineErrors("shop", {
  product_not_found: "not_found",
  product_exists: "already_exists",
  product_inactive: "failed_precondition",
  not_an_item: "failed_precondition",
  stock_too_low: "failed_precondition",
  cart_full: "resource_exhausted",
  line_too_large: "out_of_range",
  not_in_cart: "not_found",
  invalid_product: "invalid_argument",
  idempotency_conflict: "already_exists",
  order_not_found: "not_found",
  insufficient_coins: "failed_precondition",
});
export type ShopError = InstanceType<typeof ShopError>;
export type ShopErrorCode = ShopError["code"];

export interface ProductFields {
  id: string;
  name: string;
  kind: ProductKind;
  priceCoins: bigint;
  priceToman: bigint;
  coins: bigint;
  active: boolean;
}

/** A product must be sold somehow; a coin pack by card and with coins to credit. */
export function checkProduct(product: ProductFields): void {
  const invalid = (message: string) => new ShopError("invalid_product", message);
  if (product.kind !== ProductKind.ITEM && product.kind !== ProductKind.COIN_PACK)
    throw invalid("kind must be ITEM or COIN_PACK");
  if (product.priceCoins === 0n && product.priceToman === 0n)
    throw invalid("a product needs a price in coins, in toman, or both");
  if (product.kind === ProductKind.COIN_PACK) {
    if (product.coins <= 0n) throw invalid("a coin pack credits at least 1 coin");
    if (product.priceCoins !== 0n) throw invalid("coin packs are paid by card: price_coins must be 0");
  } else if (product.coins !== 0n) throw invalid("only coin packs credit coins");
}

export interface CartTotals {
  totalCoins: bigint;
  totalToman: bigint;
}

export function cartTotals(
  lines: readonly { priceCoins: bigint; priceToman: bigint; quantity: number }[],
): CartTotals {
  let totalCoins = 0n;
  let totalToman = 0n;
  for (const line of lines) {
    totalCoins += line.priceCoins * BigInt(line.quantity);
    totalToman += line.priceToman * BigInt(line.quantity);
  }
  return { totalCoins, totalToman };
}
