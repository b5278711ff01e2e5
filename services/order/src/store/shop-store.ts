// The shop's persistence: products and carts, plain SQL.
import type { Database, EntityManager } from "@ovation/db";
import type { ProductKind } from "@ovation/proto/gen/ovation/order/v1/order_pb.ts";
import type { CartLineRow, ProductRow, ShopRepository } from "../app/ports.ts";
import type { ProductFields } from "../domain/shop.ts";

type Row = Record<string, unknown>;

function productRow(row: Row, prefix = ""): ProductRow {
  const at = (name: string) => row[`${prefix}${name}`];
  return {
    id: at("id") as string,
    name: at("name") as string,
    kind: Number(at("kind")) as ProductKind,
    priceCoins: BigInt(at("price_coins") as string),
    priceToman: BigInt(at("price_toman") as string),
    coins: BigInt(at("coins") as string),
    active: at("active") as boolean,
    createdAt: new Date(at("created_at") as string),
    updatedAt: new Date(at("updated_at") as string),
  };
}

export class ShopStore implements ShopRepository {
  readonly #orm: Database;

  constructor(orm: Database) {
    this.#orm = orm;
  }

  fork(): EntityManager {
    return this.#orm.em.fork();
  }

  async activeProducts(em: EntityManager): Promise<ProductRow[]> {
    const rows = await em.execute<Row[]>("select * from products where active order by name, id");
    return rows.map((row) => productRow(row));
  }

  async product(em: EntityManager, id: string, lock = false): Promise<ProductRow | null> {
    const rows = await em.execute<Row[]>(`select * from products where id = ?${lock ? " for update" : ""}`, [
      id,
    ]);
    return rows[0] === undefined ? null : productRow(rows[0]);
  }

  /** Inserts the product unless its id exists; returns whether it was inserted. */
  async insertProduct(em: EntityManager, p: ProductFields, at: Date): Promise<boolean> {
    const rows = await em.execute<Row[]>(
      `insert into products (id, name, kind, price_coins, price_toman, coins, active, created_at, updated_at)
       values (?, ?, ?, ?, ?, ?, ?, ?, ?) on conflict (id) do nothing returning id`,
      [
        p.id,
        p.name,
        p.kind,
        p.priceCoins.toString(),
        p.priceToman.toString(),
        p.coins.toString(),
        p.active,
        at,
        at,
      ],
    );
    return rows.length === 1;
  }

  async updateProduct(em: EntityManager, p: ProductFields, at: Date): Promise<void> {
    await em.execute(
      "update products set name = ?, price_coins = ?, price_toman = ?, active = ?, updated_at = ? where id = ?",
      [p.name, p.priceCoins.toString(), p.priceToman.toString(), p.active, at, p.id],
    );
  }

  async cart(em: EntityManager, userId: string): Promise<CartLineRow[]> {
    const rows = await em.execute<Row[]>(
      `select c.quantity, p.id as p_id, p.name as p_name, p.kind as p_kind, p.price_coins as p_price_coins,
              p.price_toman as p_price_toman, p.coins as p_coins, p.active as p_active,
              p.created_at as p_created_at, p.updated_at as p_updated_at
       from cart_lines c join products p on p.id = c.product_id
       where c.user_id = ? order by c.added_at, p.id`,
      [userId],
    );
    return rows.map((row) => ({ product: productRow(row, "p_"), quantity: Number(row.quantity) }));
  }

  /** Locks the user's cart lines (and so serialises one user's cart changes). */
  async lockCart(em: EntityManager, userId: string): Promise<Map<string, number>> {
    await em.execute("select pg_advisory_xact_lock(hashtextextended(?, 0))", [`cart:${userId}`]);
    return this.cartLines(em, userId);
  }

  /** The user's cart lines, product id → quantity. */
  async cartLines(em: EntityManager, userId: string): Promise<Map<string, number>> {
    const rows = await em.execute<Row[]>("select product_id, quantity from cart_lines where user_id = ?", [
      userId,
    ]);
    return new Map(rows.map((row) => [row.product_id as string, Number(row.quantity)]));
  }

  async setLine(
    em: EntityManager,
    userId: string,
    productId: string,
    quantity: number,
    at: Date,
  ): Promise<void> {
    await em.execute(
      `insert into cart_lines (user_id, product_id, quantity, added_at) values (?, ?, ?, ?)
       on conflict (user_id, product_id) do update set quantity = excluded.quantity`,
      [userId, productId, quantity, at],
    );
  }

  async removeLine(em: EntityManager, userId: string, productId: string): Promise<void> {
    await em.execute("delete from cart_lines where user_id = ? and product_id = ?", [userId, productId]);
  }
}
