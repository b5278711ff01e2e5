// A simulated audience for the demo world: viewers send gifts in every room (most to the two
// hosts in the PK battle), redeem the flash campaign's code, buy the fan badge with coins or a
// coin pack by card (the admin buys some too), and now and then boost a room. It is bounded in time and in actions, paced
// under the gateway's per-address write limit (600 a minute by default, all of it from this one
// address), and stops by itself. Choices come from a seeded generator, so a run can be repeated.
import { ApiError, ok } from "@ovation/client";
import type { Actor, World } from "./world.ts";

export interface AudienceOptions {
  durationMs: number;
  /** Actions started per second. */
  ratePerSecond?: number;
  /** Stops after this many actions even if time is left. */
  actionsMax?: number;
  seed?: number;
  /** Called about every `reportEveryMs` with the counts so far. */
  onProgress?: (counts: AudienceCounts) => void;
  reportEveryMs?: number;
}

export interface AudienceCounts {
  gifts: number;
  redemptions: number;
  orders: number;
  boosts: number;
  /** Refusals a real audience meets too: the campaign is full, a viewer redeemed already, … */
  refused: number;
  /** Calls that failed for another reason (the message of the last one is kept). */
  failed: number;
  lastFailure?: string;
}

const defaults = { ratePerSecond: 5, actionsMax: 10_000, seed: 22, reportEveryMs: 5_000 };
/** Most gifts go to the battling hosts, so the PK bar moves. */
const battleShare = 0.6;
const actionWeights = { gift: 14, redeem: 3, order: 2, boost: 1 } as const;
const boostCoins = "100";
const adminOrderShare = 0.3;

export async function runAudience(world: World, options: AudienceOptions): Promise<AudienceCounts> {
  const settings = { ...defaults, ...options };
  const random = seededRandom(settings.seed);
  const counts: AudienceCounts = { gifts: 0, redemptions: 0, orders: 0, boosts: 0, refused: 0, failed: 0 };
  const redeemed = new Set<string>();
  const act = actions(world, random, redeemed);
  const intervalMs = 1000 / settings.ratePerSecond;
  const deadline = Date.now() + settings.durationMs;
  const inFlight = new Set<Promise<void>>();
  let nextReport = Date.now() + settings.reportEveryMs;
  for (let started = 0; started < settings.actionsMax && Date.now() < deadline; started++) {
    const kind = pick(random, Object.entries(actionWeights)) as keyof typeof actionWeights;
    const call = act[kind]()
      .then((done) => {
        if (done) counts[countOf[kind]]++;
      })
      .catch((error: unknown) => {
        if (error instanceof ApiError && refusals.has(error.code)) counts.refused++;
        else {
          counts.failed++;
          counts.lastFailure = error instanceof Error ? error.message : String(error);
        }
      })
      .finally(() => inFlight.delete(call));
    inFlight.add(call);
    if (Date.now() >= nextReport) {
      settings.onProgress?.({ ...counts });
      nextReport += settings.reportEveryMs;
    }
    await sleep(intervalMs);
  }
  await Promise.all(inFlight);
  return counts;
}

const countOf = { gift: "gifts", redeem: "redemptions", order: "orders", boost: "boosts" } as const;
/** Answers that belong to the story (a full campaign, a viewer's second try), not failures. */
const refusals = new Set(["already_exists", "resource_exhausted", "failed_precondition"]);

function actions(world: World, random: () => number, redeemed: Set<string>) {
  const viewer = () => world.viewers[Math.floor(random() * world.viewers.length)]!;
  const key = (what: string) => `demo-${world.runId}-${what}-${Math.floor(random() * 2 ** 48).toString(36)}`;
  const battling = world.hosts.slice(0, 2);
  return {
    async gift() {
      const host = random() < battleShare ? pickOne(random, battling) : pickOne(random, world.hosts);
      const gift = pick(
        random,
        world.gifts.map((one) => [one, one.weight] as const),
      );
      const count = random() < 0.8 ? 1 : 1 + Math.floor(random() * 5);
      await ok(
        viewer().client.api.POST("/api/gifts/send", {
          body: {
            roomId: world.rooms.get(host.userId)!,
            giftId: gift.id,
            count,
            idempotencyKey: key("gift"),
          },
        }),
      );
      return true;
    },
    async redeem() {
      const who = viewer();
      // Each viewer may redeem once; the audience does not knock twice.
      if (redeemed.has(who.userId)) return false;
      redeemed.add(who.userId);
      await ok(
        who.client.api.POST("/api/discount/redeem", {
          body: { code: world.campaign.code, idempotencyKey: key("redeem") },
        }),
      );
      return true;
    },
    async order() {
      const card = random() < 0.3;
      // Some orders are the admin's: the console signed in as them lists its own orders live.
      const buyer = random() < adminOrderShare ? world.admin : viewer();
      await ok(
        buyer.client.api.POST("/api/orders", {
          body: {
            items: [{ productId: card ? world.products.coinPack : world.products.item, quantity: 1 }],
            paymentMethod: card ? "PAYMENT_METHOD_CARD" : "PAYMENT_METHOD_WALLET",
            idempotencyKey: key("order"),
          },
        }),
      );
      return true;
    },
    async boost() {
      const host = pickOne(random, world.hosts);
      await ok(
        viewer().client.api.POST("/api/boosts", {
          body: {
            targetType: "BOOST_TARGET_TYPE_ROOM",
            targetId: world.rooms.get(host.userId)!,
            amount: boostCoins,
            durationHours: 1,
            idempotencyKey: key("boost"),
          },
        }),
      );
      return true;
    },
  } satisfies Record<keyof typeof actionWeights, () => Promise<boolean>>;
}

const pickOne = (random: () => number, actors: readonly Actor[]): Actor =>
  actors[Math.floor(random() * actors.length)]!;

/** A choice among weighted options. */
function pick<Option>(random: () => number, options: readonly (readonly [Option, number])[]): Option {
  const total = options.reduce((sum, [, weight]) => sum + weight, 0);
  let point = random() * total;
  for (const [option, weight] of options) {
    point -= weight;
    if (point < 0) return option;
  }
  return options.at(-1)![0];
}

/** mulberry32: a small seeded generator; the demo needs repeatable, not secure, choices. */
function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
