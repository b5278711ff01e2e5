// Pure shop rules: limits, errors, cart totals. No I/O.
import { ProductKind } from "@ovation/proto/gen/ovation/order/v1/order_pb.ts";

export const shopLimits = {
  nameMaxLength: 64,
  priceMax: 1_000_000_000n,
  coinsMax: 1_000_000_000n,
  cartLinesMax: 20,
  lineQuantityMax: 99,
  stockDeltaMax: 1_000_000n,
} as const;

export const shopErrorCodes = {
  productNotFound: "product_not_found",
  productExists: "product_exists",
  productInactive: "product_inactive",
  notAnItem: "not_an_item",
  stockTooLow: "stock_too_low",
  cartFull: "cart_full",
  lineTooLarge: "line_too_large",
  notInCart: "not_in_cart",
  invalidProduct: "invalid_product",
  idempotencyConflict: "idempotency_conflict",
  orderNotFound: "order_not_found",
  insufficientCoins: "insufficient_coins",
} as const;

export type ShopErrorCode = (typeof shopErrorCodes)[keyof typeof shopErrorCodes];

export class ShopError extends Error {
  override name = "ShopError";
  readonly code: ShopErrorCode;

  constructor(code: ShopErrorCode, message: string) {
    super(message);
    this.code = code;
  }
}

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
  const invalid = (message: string) => new ShopError(shopErrorCodes.invalidProduct, message);
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
