// Shop records as protobuf messages.
import { create } from "@bufbuild/protobuf";
import {
  type Cart,
  CartSchema,
  type Product,
  ProductSchema,
} from "@ovation/proto/gen/ovation/order/v1/order_pb.ts";
import { cartTotals } from "../domain/shop.ts";
import type { CartLineRow } from "../store/shop-store.ts";
import type { ProductView } from "./shop.ts";

export function productMessage({ product, available }: ProductView): Product {
  return create(ProductSchema, {
    id: product.id,
    name: product.name,
    kind: product.kind,
    priceCoins: product.priceCoins,
    priceToman: product.priceToman,
    coins: product.coins,
    available,
    active: product.active,
  });
}

export function cartMessage(lines: readonly CartLineRow[]): Cart {
  return create(CartSchema, {
    lines: lines.map((line) => ({
      product: productMessage({ product: line.product, available: 0n }),
      quantity: line.quantity,
    })),
    ...cartTotals(lines.map((line) => ({ ...line.product, quantity: line.quantity }))),
  });
}
