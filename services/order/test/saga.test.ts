// The order saga against the real wallet, Postgres and NATS: paid from coins and by card, with
// stock short, a card declined, coins short, the payment side down past its deadline (and the
// late payment refunded), duplicate and out-of-order events, and a rush on the last units.
import { create, type DescMessage, type MessageShape, toBinary } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { headers as natsHeaders } from "@nats-io/nats-core";
import { bearerInterceptor } from "@ovation/auth";
import { type CardApp, startCard } from "@ovation/card";
import { DlqAdmin, headerNames } from "@ovation/events";
import {
  InventoryReservedSchema,
  OrderCompletedSchema,
  OrderCreatedSchema,
  OrderFailedSchema,
  PaymentSucceededSchema,
  RefundRequestedSchema,
} from "@ovation/proto/gen/ovation/order/v1/events_pb.ts";
import {
  OrderService,
  OrderStatus,
  PaymentMethod,
  ProductKind,
} from "@ovation/proto/gen/ovation/order/v1/order_pb.ts";
import { HoldStatus, WalletService } from "@ovation/proto/gen/ovation/wallet/v1/wallet_pb.ts";
import { FaultProxy, type TestEnvironment, testEnvironment, waitFor } from "@ovation/testkit";
import { auditLedger, startWallet, type Wallet } from "@ovation/wallet";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cardPaymentBytes } from "../src/app/payments.ts";
import { sagaShow } from "../src/cli.ts";
import { type OrderApp, startOrder } from "../src/main.ts";

// Short redelivery settings, and the shortest step deadline they allow (config.ts): 500 + 350 +
// 1,000 + 5,000 ms to restart.
const fast = {
  EVENTS_RETRY_BACKOFF_MS: "50,100,200",
  EVENTS_ACK_WAIT_MS: "500",
  SERVICE_CALL_TIMEOUT_MS: "1000",
};
const stepTimeoutMs = 6_850;
let env: TestEnvironment;
let wallet: Wallet;
let app: OrderApp;
let card: CardApp;
let walletProxy: FaultProxy;
let adminToken: string;
const shop = (token: string) =>
  createClient(
    OrderService,
    createGrpcTransport({ baseUrl: app.server.url, interceptors: [bearerInterceptor(() => token)] }),
  );
const walletAdmin = () =>
  createClient(
    WalletService,
    createGrpcTransport({ baseUrl: wallet.server.url, interceptors: [bearerInterceptor(() => adminToken)] }),
  );
const key = () => crypto.randomUUID();

async function coins(userId: string): Promise<bigint> {
  return (await walletAdmin().getBalances({ userId })).balances.find((b) => b.asset === "COIN")?.amount ?? 0n;
}

async function stock(productId: string) {
  const [row] = await app.orm.em
    .fork()
    .execute<{ available: string; reserved: string; sold: string }[]>(
      "select available::text, reserved::text, sold::text from inventory_stock where product_id = ?",
      [productId],
    );
  return { available: BigInt(row!.available), reserved: BigInt(row!.reserved), sold: BigInt(row!.sold) };
}

async function item(id: string, units: bigint, priceCoins = 100n) {
  const admin = shop(adminToken);
  await admin.createProduct({
    product: {
      id,
      name: id,
      kind: ProductKind.ITEM,
      priceCoins,
      priceToman: 50_000n,
      coins: 0n,
      active: true,
    },
  });
  await admin.adjustStock({ productId: id, delta: units, idempotencyKey: `stock-${id}` });
}

async function buyer(userId: string, funds: bigint) {
  if (funds > 0n)
    await walletAdmin().mint({ userId, money: { asset: "COIN", amount: funds }, idempotencyKey: key() });
  return shop(await env.token(userId, ["user"]));
}

async function settled(client: ReturnType<typeof shop>, orderId: string, timeoutMs = 30_000) {
  return waitFor(
    async () => {
      const order = (await client.getOrder({ orderId })).order!;
      return order.status === OrderStatus.COMPLETED || order.status === OrderStatus.FAILED
        ? order
        : undefined;
    },
    { timeoutMs, what: `order ${orderId} to finish` },
  );
}

async function publish<Desc extends DescMessage>(schema: Desc, subject: string, message: MessageShape<Desc>) {
  const id = crypto.randomUUID();
  const headers = natsHeaders();
  headers.set(headerNames.eventId, id);
  headers.set(headerNames.eventType, schema.typeName);
  await app.bus.js.publish(app.bus.names.subject(subject), toBinary(schema, message), { msgID: id, headers });
  return id;
}

const handled = async (consumer: string, eventId: string) =>
  (
    await app.orm.em
      .fork()
      .execute("select 1 from inbox where consumer = ? and event_id = ?", [consumer, eventId])
  ).length === 1;

beforeAll(async () => {
  env = await testEnvironment();
  const settings = { ...env.env, PORT: "0", ...fast };
  wallet = await startWallet(settings);
  // "cat" pays with the simulator's test card that is always declined.
  card = await startCard({
    ...settings,
    CARD_LATENCY_MS: "0",
    CARD_FAILURE_RATE: "0",
    CARD_DECLINE_CUSTOMERS: "cat",
  });
  // The order service reaches the wallet through a proxy, for replies that get lost.
  walletProxy = await FaultProxy.start(wallet.server.url);
  app = await startOrder({
    ...settings,
    CARD_URL: card.server.url,
    WALLET_URL: walletProxy.url(wallet.server.url),
    ORDER_STEP_TIMEOUT_MS: String(stepTimeoutMs),
  });
  adminToken = await env.token("ops", ["admin"]);
});
afterAll(async () => {
  await app?.close();
  await walletProxy?.close();
  await card?.close();
  await wallet?.close();
  await env?.[Symbol.asyncDispose]();
});

describe("the order saga", () => {
  it("completes an order paid from coins: stock sold, coins captured, cart emptied, history kept", async () => {
    await item("badge", 5n);
    const vic = await buyer("vic", 1_000n);
    await vic.addToCart({ productId: "badge", quantity: 2 });
    const placed = (await vic.createOrder({ paymentMethod: PaymentMethod.WALLET, idempotencyKey: "first" }))
      .order!;
    expect(placed).toMatchObject({ status: OrderStatus.PENDING, total: { asset: "COIN", amount: 200n } });
    expect(
      (await vic.createOrder({ paymentMethod: PaymentMethod.WALLET, idempotencyKey: "first" })).order?.id,
    ).toBe(placed.id);
    expect((await vic.getCart({})).cart?.lines).toEqual([]);
    const done = await settled(vic, placed.id);
    expect(done.status).toBe(OrderStatus.COMPLETED);
    expect(done.history.map((s) => s.step)).toEqual([
      "order.created",
      "inventory.reserved",
      "payment.succeeded",
    ]);
    expect(await coins("vic")).toBe(800n);
    await waitFor(async () => (await stock("badge")).sold === 2n, { what: "the units sold" });
    expect(await stock("badge")).toEqual({ available: 3n, reserved: 0n, sold: 2n });
    const shown = await sagaShow(env.databaseUrl, placed.id);
    expect(shown.code).toBe(0);
    expect(shown.text).toMatch(/COMPLETED/);
    expect(shown.text.split("\n").filter((line) => /^\s+\d+\s+\d{4}-/.test(line))).toHaveLength(3);
    expect((await sagaShow(env.databaseUrl, crypto.randomUUID())).code).toBe(1);
  });

  it("answers identical orders sent at the same moment with the one order they place", async () => {
    await item("pin", 100n);
    const kim = await buyer("kim", 10_000n);
    // Half of the copies go to a second replica: copies in one process share one placement,
    // copies in two meet at the key's lock.
    const second = await startOrder({
      ...env.env,
      PORT: "0",
      ...fast,
      CARD_URL: card.server.url,
      WALLET_URL: wallet.server.url,
      ORDER_STEP_TIMEOUT_MS: String(stepTimeoutMs),
    });
    const kimToken = await env.token("kim", ["user"]);
    const kimThere = createClient(
      OrderService,
      createGrpcTransport({ baseUrl: second.server.url, interceptors: [bearerInterceptor(() => kimToken)] }),
    );
    const same = { items: [{ productId: "pin", quantity: 1 }], idempotencyKey: key() };
    for (const paymentMethod of [PaymentMethod.WALLET, PaymentMethod.CARD]) {
      const request = { ...same, paymentMethod, idempotencyKey: `${same.idempotencyKey}-${paymentMethod}` };
      const answers = await Promise.allSettled(
        Array.from({ length: 30 }, (_, i) => (i % 2 === 0 ? kim : kimThere).createOrder(request)),
      );
      const refused = answers.filter((a) => a.status === "rejected").map((a) => String(a.reason));
      expect(refused).toEqual([]);
      const ids = new Set(
        answers.map((a) => (a as PromiseFulfilledResult<{ order?: { id: string } }>).value.order?.id),
      );
      expect(ids.size).toBe(1);
    }
    await second.close();
    // One hold of 100 coins, not thirty.
    expect(await coins("kim")).toBe(9_900n);
  });

  it("completes a coin pack paid by card and credits its coins once", async () => {
    await shop(adminToken).createProduct({
      product: {
        id: "coins-500",
        name: "500 coins",
        kind: ProductKind.COIN_PACK,
        priceCoins: 0n,
        priceToman: 90_000n,
        coins: 500n,
        active: true,
      },
    });
    const ann = await buyer("ann", 0n);
    const placed = (
      await ann.createOrder({
        items: [{ productId: "coins-500", quantity: 2 }],
        paymentMethod: PaymentMethod.CARD,
        idempotencyKey: key(),
      })
    ).order!;
    expect(placed.total).toMatchObject({ asset: "TOMAN", amount: 180_000n });
    expect((await settled(ann, placed.id)).status).toBe(OrderStatus.COMPLETED);
    await waitFor(async () => (await coins("ann")) === 1_000n, { what: "1,000 coins credited" });
    expect(await codeOfOrder(ann, "coins-500", PaymentMethod.WALLET)).toBe("FailedPrecondition");
  });

  it("fails an order the stock cannot cover, and reserves nothing", async () => {
    await item("crown", 3n);
    const bob = await buyer("bob", 10_000n);
    const placed = (
      await bob.createOrder({
        items: [
          { productId: "crown", quantity: 2 },
          { productId: "badge", quantity: 9 },
        ],
        paymentMethod: PaymentMethod.WALLET,
        idempotencyKey: key(),
      })
    ).order!;
    const done = await settled(bob, placed.id);
    expect(done).toMatchObject({ status: OrderStatus.FAILED, failureReason: "only 3 of badge left" });
    expect(await stock("crown")).toEqual({ available: 3n, reserved: 0n, sold: 0n });
    // The coins held when ordering go back once the order has failed.
    await waitFor(async () => (await coins("bob")) === 10_000n, { what: "bob's hold released" });
  });

  it("compensates a declined card: stock back once, nothing charged; coins that are short place no order", async () => {
    await item("ring", 4n);
    const cat = await buyer("cat", 50n);
    const declined = (
      await cat.createOrder({
        items: [{ productId: "ring", quantity: 2 }],
        paymentMethod: PaymentMethod.CARD,
        idempotencyKey: key(),
      })
    ).order!;
    const failed = await settled(cat, declined.id);
    expect(failed).toMatchObject({ status: OrderStatus.FAILED, failureReason: "card declined" });
    expect(failed.history.map((s) => s.step)).toEqual([
      "order.created",
      "inventory.reserved",
      "payment.failed",
    ]);
    // Coins are held when ordering, with the buyer's own token: too few, and no order is placed.
    expect(await codeOfOrder(cat, "ring", PaymentMethod.WALLET)).toBe("FailedPrecondition");
    await waitFor(async () => (await stock("ring")).available === 4n, { what: "the rings back on sale" });
    expect(await stock("ring")).toEqual({ available: 4n, reserved: 0n, sold: 0n });
    expect(await coins("cat")).toBe(50n);
  });

  it("fails an order whose payment does not answer in time, and gives the held coins back", async () => {
    await item("cape", 2n);
    const dan = await buyer("dan", 500n);
    const payment = app.consumers.get("payment-pay")!;
    await payment.stop();
    let orderId: string;
    try {
      orderId = (
        await dan.createOrder({
          items: [{ productId: "cape", quantity: 1 }],
          paymentMethod: PaymentMethod.WALLET,
          idempotencyKey: key(),
        })
      ).order!.id;
      // The coins are held from the moment the order is placed.
      expect(await coins("dan")).toBe(400n);
      const failed = await settled(dan, orderId);
      expect(failed).toMatchObject({
        status: OrderStatus.FAILED,
        failureReason: `no payment answer within ${stepTimeoutMs} ms`,
      });
      await waitFor(async () => (await stock("cape")).available === 2n, { what: "the cape back on sale" });
      await waitFor(async () => (await coins("dan")) === 500n, { what: "dan's hold released" });
    } finally {
      await payment.start();
    }
    // The payment side comes back: the hold is gone, so it pays nothing.
    await waitFor(
      async () => (await dan.getOrder({ orderId })).order?.history.some((s) => s.step === "payment.failed"),
      {
        what: "the late payment attempt",
      },
    );
    expect(await coins("dan")).toBe(500n);
    expect((await dan.getOrder({ orderId })).order?.status).toBe(OrderStatus.FAILED);
  });

  it("completes an order whose capture's answer was lost: the payment asks again instead of failing", async () => {
    await item("cloak", 2n);
    const fay = await buyer("fay", 500n);
    // The capture reaches the wallet and commits; its answers do not come back for 5 s, longer
    // than four attempts of 1 s each.
    const orderId = await capturedWithoutAnswer(fay, "cloak");
    await new Promise((resolve) => setTimeout(resolve, 5_000));
    walletProxy.restore();
    const done = await settled(fay, orderId);
    expect(done.status).toBe(OrderStatus.COMPLETED);
    expect(await coins("fay")).toBe(400n);
    expect((await auditLedger(wallet.store)).ok).toBe(true);
  });

  it("asks the wallet at the payment deadline: a capture whose answer was lost completes the order", async () => {
    await item("hood", 2n);
    const hal = await buyer("hal", 500n);
    const pay = app.consumers.get("payment-pay")!;
    const orderId = await capturedWithoutAnswer(hal, "hood");
    // The payment consumer goes away without ever hearing the answer.
    await pay.stop();
    walletProxy.restore();
    try {
      const done = await settled(hal, orderId);
      expect(done.status).toBe(OrderStatus.COMPLETED);
      expect(done.history.map((s) => s.step)).toContain("deadline.payment");
      expect(await coins("hal")).toBe(400n);
    } finally {
      await pay.start();
    }
    expect((await auditLedger(wallet.store)).ok).toBe(true);
  });

  it("looks a card charge up by its key at the payment deadline and completes the order it paid", async () => {
    await item("wand", 2n);
    const ivy = await buyer("ivy", 0n);
    const pay = app.consumers.get("payment-pay")!;
    await pay.stop();
    let orderId: string;
    try {
      orderId = await placedAndProcessing(ivy, "wand", PaymentMethod.CARD);
      // The charge lands, and its answer never reaches the payment consumer.
      expect((await charge(orderId, "ivy")).paid).toBe(true);
      const done = await settled(ivy, orderId);
      expect(done.status).toBe(OrderStatus.COMPLETED);
      expect(done.history.map((s) => s.step)).toContain("deadline.payment");
    } finally {
      await pay.start();
    }
    expect(await refunded(orderId)).toBe(false);
  });

  it("refunds a card charge that lands after its order failed, once", async () => {
    await item("lute", 2n);
    const jay = await buyer("jay", 0n);
    const pay = app.consumers.get("payment-pay")!;
    await pay.stop();
    let orderId: string;
    try {
      orderId = await placedAndProcessing(jay, "lute", PaymentMethod.CARD);
      // The deadline finds no charge: the order fails.
      expect((await settled(jay, orderId)).status).toBe(OrderStatus.FAILED);
      // A payment call still on its way lands now, and is recorded and announced as the
      // payment consumer does.
      const paid = await charge(orderId, "jay");
      if (!paid.paid) throw new Error("the charge was declined");
      await app.orm.em
        .fork()
        .execute("insert into payments (order_id, reference, card_payment) values (?, ?, ?)", [
          orderId,
          paid.reference,
          Buffer.from(cardPaymentBytes(paid.cardPayment)!),
        ]);
      await publish(
        PaymentSucceededSchema,
        "order.payment.succeeded",
        create(PaymentSucceededSchema, { orderId, reference: paid.reference, cardPayment: paid.cardPayment }),
      );
      await waitFor(() => refunded(orderId), { what: "the late charge to be refunded" });
    } finally {
      await pay.start();
    }
    expect((await jay.getOrder({ orderId })).order?.status).toBe(OrderStatus.FAILED);
  });

  it("ignores duplicate and out-of-order events", async () => {
    const eve = await buyer("eve", 1_000n);
    const orderId = (
      await eve.createOrder({
        items: [{ productId: "badge", quantity: 1 }],
        paymentMethod: PaymentMethod.WALLET,
        idempotencyKey: key(),
      })
    ).order!.id;
    await settled(eve, orderId);
    await waitFor(async () => (await stock("badge")).reserved === 0n, { what: "eve's badge sold" });
    const before = await stock("badge");
    // The same answers again, as a redelivery or a replay from the DLQ would bring them.
    await publish(
      InventoryReservedSchema,
      "order.inventory.reserved",
      create(InventoryReservedSchema, { orderId }),
    );
    await publish(
      OrderCompletedSchema,
      "order.order.completed",
      create(OrderCompletedSchema, { orderId, userId: "eve", coins: 0n }),
    );
    await waitFor(async () => (await eve.getOrder({ orderId })).order!.history.length === 4, {
      what: "the duplicate in the history",
    });
    await waitFor(
      async () =>
        (await app.orm.em.fork().execute("select 1 from inbox where consumer = 'inventory-commit'")).length >=
        2,
      { what: "the inventory to see the duplicate completion" },
    );
    const after = (await eve.getOrder({ orderId })).order!;
    expect(after.status).toBe(OrderStatus.COMPLETED);
    expect(await stock("badge")).toEqual(before);
    expect(await coins("eve")).toBe(900n);

    // A failure that overtakes its order's creation: the late creation reserves nothing.
    const ghost = crypto.randomUUID();
    const failedFirst = await publish(
      OrderFailedSchema,
      "order.order.failed",
      create(OrderFailedSchema, { orderId: ghost, reason: "first" }),
    );
    await waitFor(() => handled("inventory-release", failedFirst), { what: "the early failure" });
    const createdLate = await publish(
      OrderCreatedSchema,
      "order.order.created",
      create(OrderCreatedSchema, {
        orderId: ghost,
        userId: "eve",
        lines: [{ productId: "badge", quantity: 1, limited: true }],
      }),
    );
    await waitFor(() => handled("inventory-reserve", createdLate), { what: "the late creation" });
    expect(
      await app.orm.em.fork().execute("select 1 from inventory_reservations where order_id = ?", [ghost]),
    ).toEqual([]);
    expect(await stock("badge")).toEqual(before);
  });

  it("never oversells the last units to a rush of buyers", async () => {
    await item("last", 5n);
    const buyers = await Promise.all(Array.from({ length: 20 }, (_, i) => buyer(`rush${i}`, 1_000n)));
    const placed = await Promise.all(
      buyers.map((b) =>
        b.createOrder({
          items: [{ productId: "last", quantity: 1 }],
          paymentMethod: PaymentMethod.WALLET,
          idempotencyKey: key(),
        }),
      ),
    );
    const done = await Promise.all(placed.map((p, i) => settled(buyers[i]!, p.order!.id)));
    expect(done.filter((o) => o.status === OrderStatus.COMPLETED)).toHaveLength(5);
    expect(
      done
        .filter((o) => o.status === OrderStatus.FAILED)
        .every((o) => o.failureReason === "only 0 of last left"),
    ).toBe(true);
    await waitFor(async () => (await stock("last")).sold === 5n, { what: "five sold" });
    expect(await stock("last")).toEqual({ available: 0n, reserved: 0n, sold: 5n });
    expect((await auditLedger(wallet.store)).ok).toBe(true);
  });
});

describe("events no payment stands behind", () => {
  async function deadLetter(eventId: string): Promise<string> {
    const dlq = new DlqAdmin(app.bus);
    const entry = await waitFor(
      async () => (await dlq.list(100, "")).entries.find((e) => e.eventId === eventId),
      {
        timeoutMs: 15_000,
        what: `the dead letter of ${eventId}`,
      },
    );
    return entry.reason;
  }

  it("are dead-lettered with their reason and move no money: payment successes, refund requests, completions", async () => {
    await item("orb", 3n);
    const gus = await buyer("gus", 1_000n);
    const pay = app.consumers.get("payment-pay")!;
    await pay.stop();
    let waiting: string;
    try {
      waiting = (
        await gus.createOrder({
          items: [{ productId: "orb", quantity: 1 }],
          paymentMethod: PaymentMethod.CARD,
          idempotencyKey: key(),
        })
      ).order!.id;
      await waitFor(
        async () => (await gus.getOrder({ orderId: waiting })).order?.status === OrderStatus.PROCESSING,
        {
          what: "the order to wait for its payment",
        },
      );
      // Published with the order service's own connection, as a compromised process could.
      const forged = await publish(
        PaymentSucceededSchema,
        "order.payment.succeeded",
        create(PaymentSucceededSchema, { orderId: waiting, reference: "card:made-up" }),
      );
      expect(await deadLetter(forged)).toContain(`no payment card:made-up was made for it`);
      expect((await gus.getOrder({ orderId: waiting })).order?.status).toBe(OrderStatus.PROCESSING);
    } finally {
      await pay.start();
    }
    const done = await settled(gus, waiting);
    // A completed coin order: a refund of its capture is not the buyer's due.
    const paid = (
      await gus.createOrder({
        items: [{ productId: "orb", quantity: 1 }],
        paymentMethod: PaymentMethod.WALLET,
        idempotencyKey: key(),
      })
    ).order!;
    expect((await settled(gus, paid.id)).status).toBe(OrderStatus.COMPLETED);
    const balance = await coins("gus");
    const refund = await publish(
      RefundRequestedSchema,
      "order.payment.refund_requested",
      create(RefundRequestedSchema, {
        orderId: paid.id,
        userId: "gus",
        method: PaymentMethod.WALLET,
        amount: { asset: "COIN", amount: 100n },
        reference: `hold:${crypto.randomUUID()}`,
      }),
    );
    expect(await deadLetter(refund)).toContain("which has not failed");
    // Coins for a coin pack nobody paid for: the wallet refuses to mint them.
    const mint = await publish(
      OrderCompletedSchema,
      "order.order.completed",
      create(OrderCompletedSchema, { orderId: paid.id, userId: "gus", coins: 1_000_000n }),
    );
    const dlq = new DlqAdmin(wallet.bus);
    const entry = await waitFor(
      async () => (await dlq.list(100, "")).entries.find((e) => e.eventId === mint),
      {
        timeoutMs: 15_000,
        what: "the wallet's dead letter",
      },
    );
    expect(entry.reason).toContain("carries no signed card payment");
    expect(await coins("gus")).toBe(balance);
    expect(done.status).toBe(OrderStatus.COMPLETED);
    expect((await auditLedger(wallet.store)).ok).toBe(true);
  });
});

/** The status of the hold the order placed on the buyer's coins, as the wallet has it. */
async function holdStatus(orderId: string): Promise<string | undefined> {
  const [order] = await app.orm.em
    .fork()
    .execute<{ hold_id: string }[]>("select hold_id from orders where id = ?", [orderId]);
  const [hold] = await wallet.orm.em
    .fork()
    .execute<{ status: number }[]>("select status from holds where id = ?", [order!.hold_id]);
  const names = Object.entries(HoldStatus).map(([name, value]) => [value, name.toLowerCase()] as const);
  return new Map<number, string>(names).get(hold?.status ?? -1);
}

/** Places an order and waits until it waits for its payment. */
async function placedAndProcessing(
  client: ReturnType<typeof shop>,
  productId: string,
  method: PaymentMethod,
) {
  const orderId = (
    await client.createOrder({
      items: [{ productId, quantity: 1 }],
      paymentMethod: method,
      idempotencyKey: key(),
    })
  ).order!.id;
  await waitFor(async () => (await client.getOrder({ orderId })).order?.status === OrderStatus.PROCESSING, {
    what: "the order to wait for its payment",
  });
  return orderId;
}

/**
 * Places an order while the payment consumer is stopped, then starts it again with the wallet's
 * replies lost; returns once the capture has committed at the wallet.
 */
async function capturedWithoutAnswer(client: ReturnType<typeof shop>, productId: string): Promise<string> {
  const pay = app.consumers.get("payment-pay")!;
  await pay.stop();
  let orderId: string;
  try {
    orderId = await placedAndProcessing(client, productId, PaymentMethod.WALLET);
    walletProxy.loseReplies();
  } finally {
    await pay.start();
  }
  await waitFor(async () => (await holdStatus(orderId)) === "captured", { what: "the capture to commit" });
  return orderId;
}

/** Charges the order's card as the payment module does (same key): a charge whose answer is lost. */
async function charge(orderId: string, userId: string) {
  const order = (
    await app.orm.em.fork().execute<{ total: string }[]>("select total from orders where id = ?", [orderId])
  )[0]!;
  return app.payments.pay({
    orderId,
    userId,
    method: PaymentMethod.CARD,
    asset: "TOMAN",
    amount: BigInt(order.total),
    holdId: "",
    coins: 0n,
  });
}

/** Whether the processor refunded the order's charge. */
async function refunded(orderId: string): Promise<boolean> {
  const rows = await card.orm.em
    .fork()
    .execute<{ refunded: boolean }[]>(
      "select refund_id is not null as refunded from charges where idempotency_key = ?",
      [`order:${orderId}`],
    );
  return rows[0]?.refunded === true;
}

async function codeOfOrder(client: ReturnType<typeof shop>, productId: string, method: PaymentMethod) {
  const { codeOf } = await import("@ovation/testkit");
  return codeOf(
    client.createOrder({ items: [{ productId, quantity: 1 }], paymentMethod: method, idempotencyKey: key() }),
  );
}
