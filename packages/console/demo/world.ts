// The demo world `./ov demo` builds through the REST API, as an app would (@ovation/client):
// a gift catalog, hosts live in their rooms, funded viewers, shop products, a flash campaign,
// a PK battle between two of the hosts with a bonus window, a first order by the admin (whose
// orders the console lists when it signs in as them), and tokens for everyone from the
// gateway's dev-token endpoint (so it needs a gateway with dev tokens: `./ov up` on local
// infrastructure). Running it again is safe: names stay, idempotency keys carry the run's id,
// a host already live keeps their room, and a battle still running is reused.
import { ApiError, createOvationClient, type OvationClient, ok, type Schema } from "@ovation/client";

export interface DemoOptions {
  /** The gateway, for example http://127.0.0.1:8080. */
  gatewayUrl: string;
  /** Tells this run's keys and codes from earlier ones; default: the time now in base 36. */
  runId?: string;
  viewers?: number;
  /** COIN minted for each viewer. */
  viewerCoins?: bigint;
  /** Seconds the PK battle lasts (the PK service's PK_DURATION_MIN_SECONDS is the floor). */
  battleSeconds?: number;
  /** Redemptions the campaign allows. */
  campaignLimit?: number;
}

export interface Actor {
  userId: string;
  client: OvationClient;
}

export interface World {
  gatewayUrl: string;
  runId: string;
  admin: Actor;
  hosts: Actor[];
  viewers: Actor[];
  /** Room id by host id. */
  rooms: Map<string, string>;
  gifts: readonly DemoGift[];
  battleId: string;
  campaign: { id: string; code: string; limit: number };
  products: { item: string; coinPack: string };
}

interface DemoGift {
  id: string;
  name: string;
  price: bigint;
  /** How often the audience picks it, relative to the others. */
  weight: number;
}

export const demoGifts: readonly DemoGift[] = [
  { id: "rose", name: "Rose", price: 10n, weight: 12 },
  { id: "heart", name: "Heart", price: 50n, weight: 5 },
  { id: "star", name: "Star", price: 200n, weight: 2 },
  { id: "rocket", name: "Rocket", price: 1_000n, weight: 1 },
];
const hostNames = ["hana", "hugo", "mira", "theo"];
const defaults = { viewers: 12, viewerCoins: 200_000n, battleSeconds: 120, campaignLimit: 150 };
const campaignCoins = "25";
const campaignHours = 2;
const bonusWindowSeconds = 40;
const itemStock = 10_000;

export async function seedWorld(options: DemoOptions): Promise<World> {
  const runId = options.runId ?? Date.now().toString(36);
  const settings = { ...defaults, ...definedOnly(options) };
  const signIn = actorsOf(options.gatewayUrl);
  const admin = await signIn("root", ["user", "admin"]);
  const hosts = await Promise.all(hostNames.map((name) => signIn(name, ["user", "host"])));
  const viewers = await Promise.all(
    Array.from({ length: settings.viewers }, (_, index) => signIn(`viewer${index + 1}`, ["user"])),
  );
  await createCatalog(admin);
  // The admin shops too: the console's default sign-in (root) then sees orders of its own.
  await Promise.all(
    [admin, ...viewers].map((viewer) =>
      ok(
        admin.client.api.POST("/api/admin/wallet/mint", {
          body: {
            userId: viewer.userId,
            money: { asset: "COIN", amount: String(settings.viewerCoins) },
            reference: "demo",
            idempotencyKey: `demo-${runId}-mint-${viewer.userId}`,
          },
        }),
      ),
    ),
  );
  const rooms = new Map<string, string>();
  for (const host of hosts) {
    const { room } = await ok(host.client.api.POST("/api/rooms", { body: { title: `${host.userId} live` } }));
    rooms.set(host.userId, room!.id!);
  }
  const products = await createProducts(admin, runId);
  await ok(
    admin.client.api.POST("/api/orders", {
      body: {
        items: [{ productId: products.item, quantity: 1 }],
        paymentMethod: "PAYMENT_METHOD_WALLET",
        idempotencyKey: `demo-${runId}-first-order`,
      },
    }),
  );
  const campaign = await createCampaign(admin, runId, settings.campaignLimit);
  const battleId = await startBattle(admin, hosts, runId, settings.battleSeconds);
  return {
    gatewayUrl: options.gatewayUrl,
    runId,
    admin,
    hosts,
    viewers,
    rooms,
    gifts: demoGifts,
    battleId,
    campaign,
    products,
  };
}

/** Signs people in with dev tokens; each gets a client of their own. */
function actorsOf(gatewayUrl: string) {
  const anonymous = createOvationClient({ baseUrl: gatewayUrl });
  return async (userId: string, roles: ("user" | "host" | "admin")[]): Promise<Actor> => {
    const answer = await anonymous.api.POST("/api/auth/token", { body: { userId, roles } });
    if (answer.response.status === 404) {
      throw new Error(`${gatewayUrl} mints no dev tokens: the demo needs ./ov up on local infrastructure`);
    }
    const { token } = await ok(Promise.resolve(answer));
    return { userId, client: createOvationClient({ baseUrl: gatewayUrl, token }) };
  };
}

async function createCatalog(admin: Actor): Promise<void> {
  for (const gift of demoGifts) {
    await alreadyThere(
      ok(
        admin.client.api.POST("/api/admin/gifts", {
          body: {
            gift: {
              id: gift.id,
              name: gift.name,
              price: String(gift.price),
              pkPoints: String(gift.price),
              animationKey: gift.id,
            },
          },
        }),
      ),
    );
  }
}

async function createProducts(admin: Actor, runId: string): Promise<World["products"]> {
  const products: Schema<"ovation.order.v1.Product">[] = [
    { id: "demo-badge", name: "Fan badge", kind: "PRODUCT_KIND_ITEM", priceCoins: "300", active: true },
    {
      id: "demo-coins-500",
      name: "500 coins",
      kind: "PRODUCT_KIND_COIN_PACK",
      priceToman: "50000",
      coins: "500",
      active: true,
    },
  ];
  for (const product of products) {
    // The product id is the idempotency key: a second run gets the same product back.
    await ok(admin.client.api.POST("/api/admin/products", { body: { product } }));
  }
  // Only items have stock (coin packs are unlimited); each run adds some.
  await ok(
    admin.client.api.POST("/api/admin/products/{productId}/stock", {
      params: { path: { productId: "demo-badge" } },
      body: { delta: String(itemStock), idempotencyKey: `demo-${runId}-stock` },
    }),
  );
  return { item: "demo-badge", coinPack: "demo-coins-500" };
}

async function createCampaign(admin: Actor, runId: string, limit: number): Promise<World["campaign"]> {
  const code = `DEMO${runId.toUpperCase().replace(/[^A-Z0-9]/g, "")}`.slice(0, 32);
  const { campaign } = await ok(
    admin.client.api.POST("/api/admin/discount/campaigns", {
      body: {
        name: `Flash ${runId}`,
        kind: "CAMPAIGN_KIND_SHARED_CODE",
        code,
        money: { asset: "COIN", amount: campaignCoins },
        redemptionLimit: String(limit),
        perUserLimit: 1,
        endTime: new Date(Date.now() + campaignHours * 3600_000).toISOString(),
        activate: true,
        idempotencyKey: `demo-${runId}-campaign`,
      },
    }),
  );
  return { id: campaign!.id!, code, limit };
}

/** The first two hosts battle (an admin starts it at once); one still running is reused. */
async function startBattle(admin: Actor, hosts: Actor[], runId: string, seconds: number): Promise<string> {
  const [a, b] = [hosts[0]!, hosts[1]!];
  const running = await runningBattle(admin, a.userId);
  if (running !== undefined) return running;
  const { battle } = await ok(
    admin.client.api.POST("/api/pk", {
      body: {
        mode: "BATTLE_MODE_SOLO",
        sideA: [a.userId],
        sideB: [b.userId],
        durationSeconds: seconds,
        idempotencyKey: `demo-${runId}-battle`,
      },
    }),
  );
  const battleId = battle!.id!;
  // Double points for the first seconds: the PK page marks the window while it is in force.
  await ok(
    admin.client.api.POST("/api/admin/pk/bonus-windows", {
      body: {
        multiplier: 2,
        startTime: new Date().toISOString(),
        durationSeconds: bonusWindowSeconds,
        battleId,
        idempotencyKey: `demo-${runId}-bonus`,
      },
    }),
  );
  return battleId;
}

async function runningBattle(admin: Actor, hostId: string): Promise<string | undefined> {
  const { battles } = await ok(
    admin.client.api.GET("/api/pk", { params: { query: { hostId, pageSize: 5 } } }),
  );
  return battles?.find(
    (battle) => battle.state === "BATTLE_STATE_ACTIVE" || battle.state === "BATTLE_STATE_BONUS_ROUND",
  )?.id;
}

/** An "already exists" is what a second run finds: the catalog is there. */
async function alreadyThere(call: Promise<unknown>): Promise<void> {
  try {
    await call;
  } catch (error) {
    if (!(error instanceof ApiError && error.code === "already_exists")) throw error;
  }
}

function definedOnly<Value extends object>(value: Value): Partial<Value> {
  return Object.fromEntries(
    Object.entries(value).filter(([, entry]) => entry !== undefined),
  ) as Partial<Value>;
}

/** Links to the console pages that show this world. */
export function consoleLinks(world: World): Record<string, string> {
  const base = `${world.gatewayUrl.replace(/\/+$/, "")}/console/#`;
  const firstRoom = world.rooms.get(world.hosts[0]!.userId)!;
  return {
    rooms: `${base}/rooms`,
    room: `${base}/rooms/${firstRoom}`,
    battle: `${base}/pk/${world.battleId}`,
    campaign: `${base}/campaigns/${world.campaign.id}`,
    orders: `${base}/orders`,
    operations: `${base}/operations`,
  };
}
