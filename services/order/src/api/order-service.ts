// OrderService handlers: validate, authorize, call a use case, shape the response.
import type { ServiceImpl } from "@connectrpc/connect";
import { isAdmin, requireIdentity, requireRole } from "@ovation/auth";
import type { OrderService } from "@ovation/proto/gen/ovation/order/v1/order_pb.ts";
import { decodePageCursor, encodePageCursor } from "@ovation/server";
import { cartMessage, orderMessage, productMessage } from "../app/messages.ts";
import { createOrder, type OrderDeps } from "../app/orders.ts";
import {
  adjustStock,
  cart,
  changeCart,
  createProduct,
  listProducts,
  type ShopDeps,
  updateProduct,
} from "../app/shop.ts";
import { ShopError } from "../domain/shop.ts";
import { requestSchemas as schemas, validate } from "./validate.ts";

export function orderServiceImpl(deps: ShopDeps, orders: OrderDeps): ServiceImpl<typeof OrderService> {
  return {
    async createOrder(request, ctx) {
      const user = requireIdentity(ctx);
      const valid = validate(schemas.createOrder, request);
      const order = await createOrder(orders, {
        userId: user.subject,
        items: valid.items,
        method: valid.paymentMethod,
        idempotencyKey: valid.idempotencyKey,
        // Coins are held with the buyer's own token: the wallet takes no other consent.
        consentToken: user.token,
      });
      return { order: orderMessage(order) };
    },

    async listOrders(request, ctx) {
      const user = requireIdentity(ctx);
      const valid = validate(schemas.listOrders, request);
      const size = valid.pageSize || 20;
      const rows = await orders.orders.forUser(
        orders.fork(),
        user.subject,
        size + 1,
        decodePageCursor(valid.pageToken),
      );
      const page = rows.slice(0, size);
      return {
        orders: page.map((order) => orderMessage(order)),
        nextPageToken:
          rows.length > size
            ? encodePageCursor({ at: page[page.length - 1]!.createdAt, id: page[page.length - 1]!.id })
            : "",
      };
    },

    async getOrder(request, ctx) {
      const user = requireIdentity(ctx);
      const { orderId } = validate(schemas.getOrder, request);
      const em = orders.fork();
      const order = await orders.orders.order(em, orderId);
      // Someone else's order is as unknown as one that does not exist.
      if (order === null || (order.userId !== user.subject && !isAdmin(user)))
        throw new ShopError("order_not_found", `no order ${orderId}`);
      return { order: orderMessage(order, await orders.orders.history(em, orderId)) };
    },

    async listProducts() {
      return { products: (await listProducts(deps)).map(productMessage) };
    },

    async createProduct(request, ctx) {
      requireRole(ctx, "admin");
      const { product } = validate(schemas.createProduct, request);
      return { product: productMessage(await createProduct(deps, product)) };
    },

    async updateProduct(request, ctx) {
      requireRole(ctx, "admin");
      const { productId, ...change } = validate(schemas.updateProduct, request);
      return { product: productMessage(await updateProduct(deps, productId, change)) };
    },

    async adjustStock(request, ctx) {
      const admin = requireRole(ctx, "admin");
      const valid = validate(schemas.adjustStock, request);
      const view = await adjustStock(deps, {
        productId: valid.productId,
        delta: valid.delta,
        key: valid.idempotencyKey,
        by: admin.subject,
      });
      return { product: productMessage(view) };
    },

    async getCart(_request, ctx) {
      const user = requireIdentity(ctx);
      return { cart: cartMessage(await cart(deps, user.subject)) };
    },

    async addToCart(request, ctx) {
      const user = requireIdentity(ctx);
      const valid = validate(schemas.addToCart, request);
      return { cart: cartMessage(await changeCart(deps, { userId: user.subject, ...valid, mode: "add" })) };
    },

    async updateCartItem(request, ctx) {
      const user = requireIdentity(ctx);
      const valid = validate(schemas.updateCartItem, request);
      return { cart: cartMessage(await changeCart(deps, { userId: user.subject, ...valid, mode: "set" })) };
    },

    async removeCartItem(request, ctx) {
      const user = requireIdentity(ctx);
      const { productId } = validate(schemas.removeCartItem, request);
      const lines = await changeCart(deps, { userId: user.subject, productId, quantity: 0, mode: "remove" });
      return { cart: cartMessage(lines) };
    },
  };
}
