// The console in a real browser (Debian's chromium driven by playwright-core) against the whole
// stack, every service a child process as `./ov up` runs them, with dev tokens on. The demo's
// own seeding builds the world; each test then drives real traffic through the REST API and
// waits for what a person would see change: a gift appears in the room feed, the ranking
// changes, the PK bar moves and the battle settles, the campaign counter reaches N, the order
// timeline shows its saga, a dead letter replayed or discarded disappears, a refused outbox row
// shows its error, and the ledger audit passes. The demo's audience runs briefly at the end.
// Every page is saved as a screenshot under packages/console/test-artifacts/ (git-ignored).
import { mkdirSync } from "node:fs";
import { resolve } from "node:path";
import { ok } from "@ovation/client";
import { EventBus } from "@ovation/events";
import { type TestEnvironment, testEnvironment, waitFor } from "@ovation/testkit";
import { type Stack, startStack, unthrottledGateway } from "@ovation/testkit/bench";
import pg from "pg";
import { type Browser, chromium, type Locator, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runAudience } from "../demo/audience.ts";
import { type Actor, seedWorld, type World } from "../demo/world.ts";

/** Debian's chromium (`.ci/run` installs it); playwright-core downloads no browser. */
const chromiumPath = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const artifacts = resolve(import.meta.dirname, "../test-artifacts");
/** Seven Node processes start at once on two cores: under a loaded run that takes most of a minute. */
const stackStartTimeoutMs = 180_000;
/** How long a person would wait for a page to show a change. */
const seenWithinMs = 10_000;

let env: TestEnvironment;
let stack: Stack;
let gateway: string;
let world: World;
let browser: Browser;
let page: Page;
let bus: EventBus;

beforeAll(async () => {
  env = await testEnvironment();
  stack = await startStack(env, {
    env: {
      OVATION_DEV_TOKENS: "true",
      DATABASE_POOL_MAX: "3",
      // Battles short enough to settle within the test; the card processor pays at once.
      PK_DURATION_MIN_SECONDS: "1",
      PK_SETTLE_DELAY_MS: "200",
      CARD_LATENCY_MS: "0",
      CARD_FAILURE_RATE: "0",
      ...unthrottledGateway,
    },
  });
  gateway = stack.service("gateway").url;
  await waitFor(async () => (await fetch(`${gateway}/readyz`)).ok, {
    what: "the gateway to be ready",
    timeoutMs: 30_000,
  });
  world = await seedWorld({ gatewayUrl: gateway, runId: "t1", viewers: 6, battleSeconds: 300 });
  bus = await EventBus.connect({
    url: env.natsUrl,
    prefix: env.prefix,
    name: "console-test",
    ...env.natsOps,
  });
  mkdirSync(artifacts, { recursive: true });
  browser = await chromium.launch({
    executablePath: chromiumPath,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-sync",
    ],
  });
  page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
}, stackStartTimeoutMs);

afterAll(async () => {
  await browser?.close();
  await bus?.close();
  await Promise.all(
    [world?.admin, ...(world?.viewers ?? []), ...(world?.hosts ?? [])].map((actor) => actor?.client.close()),
  );
  await stack?.[Symbol.asyncDispose]();
  await env?.[Symbol.asyncDispose]();
});

const open = (hash: string) => page.goto(`${gateway}/console/#${hash}`);
const screenshot = (name: string) =>
  page.screenshot({ path: resolve(artifacts, `${name}.png`), fullPage: true });
/** The element's text as rendered, which is what a person reads (not hidden text). */
// biome-ignore lint/performance/useDomNodeTextContent: Playwright's innerText is the rendered text, by intent
const shownText = (locator: Locator) => locator.innerText();

/** Waits until the element's text matches, as a person watching it would. */
const seen = (locator: Locator, text: string | RegExp, timeout = seenWithinMs) =>
  expect
    .poll(async () => (await locator.count()) > 0 && (await shownText(locator.first())), { timeout })
    .toMatch(text);

const viewer = (index: number): Actor => world.viewers[index]!;
const host = (name: string): Actor => world.hosts.find((one) => one.userId === name)!;

/** COIN in a host's wallet. */
async function hostCoins(who: Actor): Promise<bigint> {
  const { balances } = await ok(who.client.api.GET("/api/wallet"));
  return BigInt(balances?.find((balance) => balance.asset === "COIN")?.amount ?? "0");
}
let sendCount = 0;

async function sendGift(from: Actor, hostId: string, giftId: string, count = 1) {
  return ok(
    from.client.api.POST("/api/gifts/send", {
      body: { roomId: world.rooms.get(hostId)!, giftId, count, idempotencyKey: `test-send-${++sendCount}` },
    }),
  );
}

describe("signing in", () => {
  it("the sign-in page offers a dev token here, and the header then names the admin", async () => {
    await open("/sign-in");
    await page.getByRole("button", { name: "Get a dev token" }).waitFor({ timeout: seenWithinMs });
    await screenshot("sign-in");
    await page.getByLabel("User id").fill("root");
    await page.getByRole("button", { name: "Get a dev token" }).click();
    await seen(page.getByTestId("signed-in"), "root (user, admin)");
  });

  it("a pasted user token signs in too, and Operations then asks for the admin role", async () => {
    const other = await browser.newPage();
    const token = await env.token("viewer1", ["user"]);
    await other.goto(`${gateway}/console/#/sign-in`);
    await other.locator("textarea[name=token]").fill(token);
    await other.getByRole("button", { name: "Use this token" }).click();
    await other.goto(`${gateway}/console/#/operations`);
    await other.getByText("Operations need the admin role").waitFor({ timeout: seenWithinMs });
    await other.close();
  });
});

describe("rooms", () => {
  it("lists the live rooms as discovery ranks them, and a big gift moves a room to the top", async () => {
    await open("/rooms");
    const rows = page.getByTestId("rooms").locator("tbody tr");
    await expect.poll(() => rows.count(), { timeout: seenWithinMs }).toBe(world.hosts.length);
    await sendGift(viewer(0), "theo", "rocket", 3);
    await seen(rows.first(), /theo/);
    await screenshot("rooms");
  });

  it("a room's page shows a gift arrive in its feed, its top gifter and a boost", async () => {
    const roomId = world.rooms.get("hana")!;
    await open(`/rooms/${roomId}`);
    await seen(page.getByTestId("channel-state"), "feed live");
    await sendGift(viewer(1), "hana", "rose", 3);
    await seen(page.getByTestId("gift-feed"), /viewer2 sent 3 × Rose/);
    await seen(page.getByTestId("leaderboard"), /viewer2\s+30 COIN/);
    await ok(
      viewer(2).client.api.POST("/api/boosts", {
        body: {
          targetType: "BOOST_TARGET_TYPE_ROOM",
          targetId: roomId,
          amount: "100",
          durationHours: 1,
          idempotencyKey: "test-boost",
        },
      }),
    );
    await seen(page.getByTestId("boosts"), /viewer3 boosted 100 COIN for 1 h/);
    await screenshot("room");
  });
});

describe("PK", () => {
  it("the score bar moves with gifts, the bonus window is in force, and the battle settles with its MVP", async () => {
    const battleSeconds = 10;
    const { battle } = await ok(
      world.admin.client.api.POST("/api/pk", {
        body: {
          mode: "BATTLE_MODE_SOLO",
          sideA: ["mira"],
          sideB: ["theo"],
          durationSeconds: battleSeconds,
          idempotencyKey: "test-pk",
        },
      }),
    );
    const battleId = battle!.id!;
    await ok(
      world.admin.client.api.POST("/api/admin/pk/bonus-windows", {
        body: {
          multiplier: 3,
          startTime: new Date().toISOString(),
          durationSeconds: 60,
          battleId,
          idempotencyKey: "test-bonus",
        },
      }),
    );
    await open(`/pk/${battleId}`);
    await seen(page.getByTestId("channel-state"), "scores live");
    await seen(page.getByTestId("countdown"), /\d:\d\d left/);
    await seen(page.getByTestId("bonus-windows"), /×3 for every gift.*in force now/);
    const shareOfA = () =>
      page
        .getByTestId("score-a")
        .evaluate((element) => Number.parseFloat((element as HTMLElement).style.width));
    expect(await shareOfA()).toBe(50);
    await sendGift(viewer(3), "mira", "heart", 2); // 2 × 50 points × 3 (the bonus window)
    await seen(page.getByTestId("score-a"), /mira 300/);
    await expect.poll(shareOfA, { timeout: seenWithinMs }).toBe(100);
    await screenshot("pk-live");
    // The battle ends after its 10 s and settles once its gifts are scored.
    await seen(page.getByTestId("result"), /mira won \(settled\)/, battleSeconds * 1000 + seenWithinMs);
    await seen(page.getByTestId("side-a"), /MVP: viewer4/);
    await screenshot("pk-settled");
  });

  it("the PK page lists the battles of the hosts who are live", async () => {
    await open("/pk");
    await seen(page.getByTestId("battles"), /hana vs hugo/);
  });
});

describe("campaigns", () => {
  it("the counter of the flash campaign reaches N as N viewers redeem, and the rate is charted", async () => {
    await open(`/campaigns/${world.campaign.id}`);
    await seen(page.getByTestId("channel-state"), "counter live");
    await seen(page.getByTestId("counter"), `0 / ${world.campaign.limit} redeemed`);
    const redeemers = world.viewers.slice(0, 4);
    await Promise.all(
      redeemers.map((one) =>
        ok(
          one.client.api.POST("/api/discount/redeem", {
            body: { code: world.campaign.code, idempotencyKey: `test-redeem-${one.userId}` },
          }),
        ),
      ),
    );
    await seen(page.getByTestId("counter"), `${redeemers.length} / ${world.campaign.limit} redeemed`);
    await expect.poll(() => page.locator(".chart canvas").count()).toBe(1);
    await screenshot("campaign");
  });
});

describe("orders", () => {
  it("an order's saga is shown as a timeline, step by step, until it completes; my orders are listed", async () => {
    const buyer = viewer(4);
    const { order } = await ok(
      buyer.client.api.POST("/api/orders", {
        body: {
          items: [{ productId: world.products.item, quantity: 2 }],
          paymentMethod: "PAYMENT_METHOD_WALLET",
          idempotencyKey: "test-order",
        },
      }),
    );
    await open(`/orders/${order!.id}`);
    await seen(page.getByTestId("order-status"), /^completed$/);
    const history = await waitFor(async () => {
      const shown = (
        await ok(buyer.client.api.GET("/api/orders/{orderId}", { params: { path: { orderId: order!.id! } } }))
      ).order;
      return shown?.status === "ORDER_STATUS_COMPLETED" && shown.history;
    });
    const steps = page.getByTestId("timeline").locator("li");
    await expect.poll(() => steps.count(), { timeout: seenWithinMs }).toBe(history.length);
    for (const [index, step] of history.entries())
      expect(await shownText(steps.nth(index))).toContain(step.step);
    await screenshot("order");
    // Signed in as root, the list shows root's own order (the demo's first one).
    await open("/orders");
    await seen(page.getByTestId("orders"), /completed\s+300 COIN/);
  });
});

describe("operations", () => {
  it("a poison gift event becomes a dead letter that can be inspected and discarded", async () => {
    await open("/operations");
    const letters = page.getByTestId("dead-letters");
    await seen(letters, /No dead letters/);
    // An undecodable gift event: the host-credit consumer dead-letters it on first delivery.
    await bus.js.publish(bus.names.subject("gift.gift.sent"), new Uint8Array([0xff, 0xff, 0xff]));
    const row = letters.locator("tr", { hasText: "wallet-host-credit" });
    await seen(row, /gift\.gift\.sent/);
    await row.getByRole("button", { name: "Inspect" }).click();
    await seen(page.getByTestId("dlq-inspect"), /undecodable ovation\.gift\.v1\.GiftSent[\s\S]*\/\/\/\//);
    await screenshot("operations-dead-letter");
    await row.getByRole("button", { name: "Discard" }).click();
    await expect.poll(() => row.count(), { timeout: seenWithinMs }).toBe(0);
    await seen(page.getByTestId("dlq-outcome"), /Discarded #\d+/);
  });

  it("a dead letter whose event its consumer can take by now is replayed and disappears", async () => {
    // A consumer gave up on a gift event it has processed since: its advisory is what JetStream
    // sends when deliveries run out. Replaying asks the consumer again, which succeeds.
    const credited = () => hostCoins(host("hugo"));
    const before = await credited();
    await sendGift(viewer(5), "hugo", "rose");
    // The host's share landing in their wallet says the consumer has taken the event.
    await waitFor(async () => (await credited()) > before, { what: "hugo's share of the rose" });
    // Its event is the last gift event: the wallet's relay published it before the host's share.
    const stream = bus.names.stream("GIFT");
    const original = await bus.jsm.streams.getMessage(stream, {
      last_by_subj: bus.names.subject("gift.gift.sent"),
    });
    if (original === null) throw new Error("the gift event is not in its stream");
    bus.connection.publish(
      `$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.${stream}.wallet-host-credit`,
      JSON.stringify({ stream, consumer: "wallet-host-credit", stream_seq: original.seq, deliveries: 4 }),
    );
    const row = page.getByTestId("dead-letters").locator("tr", { hasText: "wallet-host-credit" });
    await seen(row, /delivered 4 times/);
    await row.getByRole("button", { name: "Replay" }).click();
    await seen(page.getByTestId("dlq-outcome"), /Replayed #\d+/);
    await expect.poll(() => row.count(), { timeout: seenWithinMs }).toBe(0);
  });

  it("shows an outbox row JetStream refused, the lag of each consumer, and the ledger audit's result", async () => {
    const database = new pg.Pool({ connectionString: env.databaseUrl, max: 1 });
    try {
      // The wallet may not publish this subject (bus permissions): its relay sets the row aside.
      await database.query(
        `insert into wallet.outbox (event_id, subject, type, payload) values (gen_random_uuid(), 'nowhere.stuck.row', 't', '')`,
      );
      const outbox = page.getByTestId("outbox");
      await seen(outbox, /wallet\s+#\d+\s+nowhere\.stuck\.row\s+\d+ attempts\s+.*Permissions Violation/);
      const lag = page.getByTestId("consumer-lag");
      await seen(lag, /wallet-host-credit\tGIFT\twallet\t\d+\t\d+\t\d+/);
      await seen(lag, /payment-release\tORDER\torder\t\d+\t\d+\t\d+/);
      expect(await page.getByTestId("consumer-lag").locator("canvas").count()).toBe(1);
      await page.getByRole("button", { name: "Run the ledger audit" }).click();
      await seen(page.getByTestId("audit-result"), "Ledger audit passed");
      await screenshot("operations");
      await database.query("delete from wallet.outbox where subject = 'nowhere.stuck.row'");
    } finally {
      await database.end();
    }
  });
});

describe("the demo", () => {
  it("a short audience run sends gifts, redeems, orders and boosts with nothing failing", async () => {
    // Bounded by a number of actions, not by time: beside the cluster soak on two cores, 3 s at
    // 10/s started only 14 of 30.
    const counts = await runAudience(world, {
      durationMs: 60_000,
      ratePerSecond: 10,
      actionsMax: 20,
      seed: 7,
    });
    expect(counts.failed, counts.lastFailure).toBe(0);
    expect(counts.gifts).toBeGreaterThan(0);
    expect(counts.gifts + counts.redemptions + counts.orders + counts.boosts + counts.refused).toBe(20);
    await open("/rooms");
    await seen(page.getByTestId("rooms").locator("tbody tr").first(), /COIN/);
    await screenshot("rooms-after-demo");
  });
});
