// Shop use cases: the catalog (admin) and carts (users).
import { type EntityManager, retryRaces } from "@ovation/db";
import { ProductKind } from "@ovation/proto/gen/ovation/order/v1/order_pb.ts";
import { checkProduct, type ProductFields, ShopError, shopLimits } from "../domain/shop.ts";
import type { Inventory } from "./inventory.ts";
import type { CartLineRow, ProductRow, ShopRepository } from "./ports.ts";

export interface ShopDeps {
  store: ShopRepository;
  inventory: Inventory;
}

export interface ProductView {
  product: ProductRow;
  /** Units available (items); 0 for coin packs (unlimited). */
  available: bigint;
}

const sameFields = (a: ProductFields, b: ProductFields) =>
  a.name === b.name &&
  a.kind === b.kind &&
  a.priceCoins === b.priceCoins &&
  a.priceToman === b.priceToman &&
  a.coins === b.coins &&
  a.active === b.active;

async function views(deps: ShopDeps, em: EntityManager, products: ProductRow[]): Promise<ProductView[]> {
  const available = await deps.inventory.available(
    em,
    products.filter((p) => p.kind === ProductKind.ITEM).map((p) => p.id),
  );
  return products.map((product) => ({ product, available: available.get(product.id) ?? 0n }));
}

export async function listProducts(deps: ShopDeps): Promise<ProductView[]> {
  const em = deps.store.fork();
  return views(deps, em, await deps.store.activeProducts(em));
}

export async function productView(deps: ShopDeps, id: string): Promise<ProductView> {
  const em = deps.store.fork();
  const product = await deps.store.product(em, id);
  if (product === null) throw new ShopError("product_not_found", `no product ${id}`);
  return (await views(deps, em, [product]))[0]!;
}

/** Adds a product; the id is the idempotency key. */
export async function createProduct(deps: ShopDeps, fields: ProductFields): Promise<ProductView> {
  checkProduct(fields);
  await retryRaces(() =>
    deps.store.fork().transactional(async (em) => {
      if (await deps.store.insertProduct(em, fields, new Date())) return;
      const existing = (await deps.store.product(em, fields.id))!;
      if (!sameFields(existing, fields))
        throw new ShopError("product_exists", `another product already has the id ${fields.id}`);
    }),
  );
  return productView(deps, fields.id);
}

export async function updateProduct(
  deps: ShopDeps,
  id: string,
  change: Pick<ProductFields, "name" | "priceCoins" | "priceToman" | "active">,
): Promise<ProductView> {
  await retryRaces(() =>
    deps.store.fork().transactional(async (em) => {
      const product = await deps.store.product(em, id, true);
      if (product === null) throw new ShopError("product_not_found", `no product ${id}`);
      const updated = { ...product, ...change };
      checkProduct(updated);
      await deps.store.updateProduct(em, updated, new Date());
    }),
  );
  return productView(deps, id);
}

export async function adjustStock(
  deps: ShopDeps,
  command: { productId: string; delta: bigint; key: string; by: string },
): Promise<ProductView> {
  const { product } = await productView(deps, command.productId);
  if (product.kind !== ProductKind.ITEM)
    throw new ShopError("not_an_item", "only limited items have stock; coin packs are unlimited");
  await deps.inventory.adjust(command);
  return productView(deps, command.productId);
}

export async function cart(deps: ShopDeps, userId: string): Promise<CartLineRow[]> {
  return deps.store.cart(deps.store.fork(), userId);
}

/** Adds to a line, or sets it; the cart stays within its bounds or nothing changes. */
export async function changeCart(
  deps: ShopDeps,
  command: { userId: string; productId: string; quantity: number; mode: "add" | "set" | "remove" },
): Promise<CartLineRow[]> {
  await retryRaces(() =>
    deps.store.fork().transactional(async (em) => {
      const lines = await deps.store.lockCart(em, command.userId);
      const current = lines.get(command.productId);
      if (command.mode === "remove") {
        if (current !== undefined) await deps.store.removeLine(em, command.userId, command.productId);
        return;
      }
      if (command.mode === "set" && current === undefined)
        throw new ShopError("not_in_cart", `${command.productId} is not in your cart`);
      const product = await deps.store.product(em, command.productId);
      if (product === null) throw new ShopError("product_not_found", `no product ${command.productId}`);
      if (!product.active) throw new ShopError("product_inactive", `${command.productId} is not on sale`);
      if (current === undefined && lines.size >= shopLimits.cartLinesMax)
        throw new ShopError("cart_full", `a cart holds at most ${shopLimits.cartLinesMax} products`);
      const quantity = command.mode === "add" ? (current ?? 0) + command.quantity : command.quantity;
      if (quantity > shopLimits.lineQuantityMax)
        throw new ShopError("line_too_large", `at most ${shopLimits.lineQuantityMax} units of a product`);
      await deps.store.setLine(em, command.userId, command.productId, quantity, new Date());
    }),
  );
  return cart(deps, command.userId);
}
