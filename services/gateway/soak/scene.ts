// The scene a soak plays in, set up through the front door as an operator would (admin REST
// calls through the balanced gateways), except the funding of thousands of users, which is
// written as mint transfers straight into the wallet's tables (testkit seed.ts): a 1-coin gift,
// hosts live in a room each, funded senders and buyers, a shared-code flash campaign, and
// stocked products. Tokens are signed up front, so signing costs nothing under load.
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { GiftService } from "@ovation/proto/gen/ovation/gift/v1/gift_pb.ts";
import { type TestEnvironment, waitFor } from "@ovation/testkit";
import { type SqlRunner, type Stack, seedFundedUsers } from "@ovation/testkit/bench";
import { restOk } from "./rest.ts";

export interface SceneSize {
  senders: number;
  hosts: number;
  crowd: number;
  slots: number;
  /** Buyers of the orders; each is funded with `buyerCoins`. */
  buyers: number;
  products: number;
  /** Units each product is stocked with. */
  stock: number;
}

export interface Scene {
  adminToken: string;
  roomIds: string[];
  hostIds: string[];
  senderIds: string[];
  senderTokens: string[];
  crowdIds: string[];
  crowdTokens: string[];
  campaignId: string;
  campaignCode: string;
  /** What each winner of the campaign is credited. */
  campaignCoins: bigint;
  buyerIds: string[];
  buyerTokens: string[];
  productIds: string[];
}

export const giftId = "rose";
export const giftPrice = 1n;
export const productPriceCoins = 10n;
export const buyerCoins = 1_000n;
const senderCoins = 1_000_000_000n;
const campaignCoins = 10n;

const numbered = (prefix: string, count: number) =>
  Array.from({ length: count }, (_, i) => `${prefix}${i + 1}`);

export async function setUpScene(
  env: TestEnvironment,
  stack: Stack,
  db: SqlRunner,
  size: SceneSize,
): Promise<Scene> {
  const gateway = stack.url("gateway");
  const adminToken = await env.token("soak-admin", ["admin"]);
  const admin = { token: adminToken };
  await restOk(gateway, "POST", "/api/admin/gifts", {
    ...admin,
    body: {
      gift: { id: giftId, name: "Rose", price: String(giftPrice), pkPoints: "1", animationKey: giftId },
    },
  });
  const hostIds = numbered("host", size.hosts);
  const roomIds: string[] = [];
  for (const hostId of hostIds) {
    const token = await env.token(hostId, ["user", "host"]);
    roomIds.push((await restOk(gateway, "POST", "/api/rooms", { token, body: { title: hostId } })).room.id);
  }
  const senderIds = numbered("s", size.senders);
  const buyerIds = numbered("b", size.buyers);
  await seedFundedUsers(db, "s", size.senders, senderCoins);
  await seedFundedUsers(db, "b", size.buyers, buyerCoins);
  const campaignCode = "FLASH";
  const campaign = await restOk(gateway, "POST", "/api/admin/discount/campaigns", {
    ...admin,
    idempotencyKey: "soak-flash",
    body: {
      name: "Soak flash",
      kind: "CAMPAIGN_KIND_SHARED_CODE",
      code: campaignCode,
      money: { asset: "COIN", amount: String(campaignCoins) },
      redemptionLimit: String(size.slots),
      endTime: new Date(Date.now() + 3_600_000).toISOString(),
      activate: true,
    },
  });
  const productIds = numbered("item", size.products);
  for (const id of productIds) {
    await restOk(gateway, "POST", "/api/admin/products", {
      ...admin,
      body: {
        product: {
          id,
          name: `Item ${id}`,
          kind: "PRODUCT_KIND_ITEM",
          priceCoins: String(productPriceCoins),
          priceToman: "1000",
          active: true,
        },
      },
    });
    await restOk(gateway, "POST", `/api/admin/products/${id}/stock`, {
      ...admin,
      idempotencyKey: `stock-${id}`,
      body: { delta: String(size.stock) },
    });
  }
  await catalogOnEveryReplica(stack, adminToken);
  const crowdIds = numbered("c", size.crowd);
  const sign = (ids: string[]) => Promise.all(ids.map((id) => env.token(id, ["user"])));
  return {
    adminToken,
    roomIds,
    hostIds,
    senderIds,
    senderTokens: await sign(senderIds),
    crowdIds,
    crowdTokens: await sign(crowdIds),
    campaignId: campaign.campaign.id,
    campaignCode,
    campaignCoins,
    buyerIds,
    buyerTokens: await sign(buyerIds),
    productIds,
  };
}

/**
 * Each gift replica serves the catalog from its own cache, refreshed by an event: a send that
 * reaches a replica that has not heard of the new gift yet is refused. Users arrive once the
 * gift is on sale everywhere.
 */
async function catalogOnEveryReplica(stack: Stack, token: string): Promise<void> {
  for (let replica = 0; replica < stack.replicas; replica++) {
    const gift = createClient(
      GiftService,
      createGrpcTransport({ baseUrl: stack.service("gift", replica).url }),
    );
    await waitFor(
      async () =>
        (await gift.listGifts({}, { headers: { authorization: `Bearer ${token}` } })).gifts.some(
          (listed) => listed.id === giftId,
        ),
      { what: `the gift on replica ${replica + 1} of the gift service` },
    );
  }
}
