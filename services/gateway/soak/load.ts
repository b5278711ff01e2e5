// The three loads of the soak, all through the balanced gateways as REST clients with
// idempotency keys (rest.ts): a closed-loop gift storm, a flash crowd arriving over a few
// seconds at a shared code, and orders placed at an even pace. Each records every final answer,
// so the checks can hold the ledger to exactly what clients were told.
import { type Answer, restCall } from "./rest.ts";
import { giftId, type Scene } from "./scene.ts";

export interface SendRecord {
  sender: string;
  idempotencyKey: string;
  answer: Answer;
}

export interface RedeemRecord {
  user: string;
  answer: Answer;
}

export interface OrderRecord {
  buyer: string;
  productId: string;
  quantity: number;
  paymentMethod: "PAYMENT_METHOD_WALLET" | "PAYMENT_METHOD_CARD";
  answer: Answer;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)));

/** `senders` closed-loop senders, one rose at a time into the rooms in turn, for `durationMs`. */
export async function giftStorm(
  gateway: string,
  scene: Scene,
  durationMs: number,
  /** Asked once the duration is over, before each further send: whether to go on. */
  goOn: (records: readonly SendRecord[]) => boolean = () => false,
): Promise<SendRecord[]> {
  const records: SendRecord[] = [];
  const end = performance.now() + durationMs;
  const sender = async (worker: number) => {
    for (let i = 0; performance.now() < end || goOn(records); i++) {
      const idempotencyKey = `send-${worker}-${i}`;
      const answer = await restCall(gateway, "POST", "/api/gifts/send", {
        token: scene.senderTokens[worker]!,
        idempotencyKey,
        body: { roomId: scene.roomIds[(worker + i) % scene.roomIds.length], giftId, count: 1 },
      });
      records.push({ sender: scene.senderIds[worker]!, idempotencyKey, answer });
    }
  };
  await Promise.all(scene.senderTokens.map((_, worker) => sender(worker)));
  return records;
}

/** Every member of the crowd redeems the campaign's code once, arriving evenly over `spreadMs`. */
export async function flashCrowd(gateway: string, scene: Scene, spreadMs: number): Promise<RedeemRecord[]> {
  const start = performance.now();
  const crowd = scene.crowdIds.length;
  return Promise.all(
    scene.crowdIds.map(async (user, i) => {
      await sleep(start + (i / crowd) * spreadMs - performance.now());
      const answer = await restCall(gateway, "POST", "/api/discount/redeem", {
        token: scene.crowdTokens[i]!,
        idempotencyKey: `redeem-${user}`,
        body: { code: scene.campaignCode },
      });
      return { user, answer };
    }),
  );
}

/**
 * `count` orders at an even pace over `spreadMs`, buyers and products in turn, one or two units,
 * seven in ten paid from the wallet and the rest by card.
 */
export async function placeOrders(
  gateway: string,
  scene: Scene,
  count: number,
  spreadMs: number,
): Promise<OrderRecord[]> {
  const start = performance.now();
  return Promise.all(
    Array.from({ length: count }, async (_, i) => {
      await sleep(start + (i / count) * spreadMs - performance.now());
      const buyer = i % scene.buyerIds.length;
      const order = {
        buyer: scene.buyerIds[buyer]!,
        productId: scene.productIds[i % scene.productIds.length]!,
        quantity: 1 + (i % 2),
        paymentMethod: i % 10 < 7 ? ("PAYMENT_METHOD_WALLET" as const) : ("PAYMENT_METHOD_CARD" as const),
      };
      const answer = await restCall(gateway, "POST", "/api/orders", {
        token: scene.buyerTokens[buyer]!,
        idempotencyKey: `order-${i}`,
        body: {
          items: [{ productId: order.productId, quantity: order.quantity }],
          paymentMethod: order.paymentMethod,
        },
      });
      return { ...order, answer };
    }),
  );
}
