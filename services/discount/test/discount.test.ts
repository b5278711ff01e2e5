// Discount campaigns against the real wallet, Postgres and NATS: a flash crowd gets exactly N
// redemptions with positions 1..N and exactly N credits; one user racing gets one; single-use
// codes redeem once; each refusal has its own code; the wallet down during the flash still ends
// with every credit; two replicas still give exactly N; the ledger audit passes.
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import {
  CampaignKind,
  CampaignStatus,
  DiscountService,
} from "@ovation/proto/gen/ovation/discount/v1/discount_pb.ts";
import { WalletService } from "@ovation/proto/gen/ovation/wallet/v1/wallet_pb.ts";
import { waitFor } from "@ovation/testkit";
import { auditLedger } from "@ovation/wallet";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startDiscount } from "../src/main.ts";
import {
  codeOf,
  type DiscountHarness,
  fastRetries,
  redeemAs,
  sharedCampaign,
  startDiscountHarness,
} from "./helpers.ts";

let h: DiscountHarness;
let admin: string;
const discount = (token?: string, url = h.discount.server.url) => h.client(DiscountService, url, token);
const tokensFor = (prefix: string, count: number) =>
  Promise.all(Array.from({ length: count }, (_, i) => h.env.token(`${prefix}${i}`, ["user"])));

async function tomanCredited(prefix: string, users: number): Promise<bigint> {
  const rows = await h
    .wallet!.orm.em.fork()
    .execute<{ total: string | null }[]>(
      `select sum(amount)::text as total from transfers where kind = 7 and credit_owner like ? and asset = 'TOMAN'`,
      [`user:${prefix}%`],
    );
  expect(users).toBeGreaterThan(0);
  return BigInt(rows[0]?.total ?? "0");
}

async function redemptions(campaignId: string): Promise<bigint[]> {
  const rows = await h.discount.orm.em
    .fork()
    .execute<{ position: string }[]>(
      "select position::text from redemptions where campaign_id = ? order by 1",
      [campaignId],
    );
  return rows.map((r) => BigInt(r.position)).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
}

const oneToN = (n: number) => Array.from({ length: n }, (_, i) => BigInt(i + 1));

beforeAll(async () => {
  h = await startDiscountHarness();
  admin = await h.env.token("ops", ["admin"]);
});
afterAll(() => h?.close());

describe("a flash crowd", () => {
  it("gives exactly the first 1,000 of 5,000 users a redemption and a credit, positions 1..1000 once each", async () => {
    const campaign = (await discount(admin).createCampaign(sharedCampaign("NOWRUZ1405", 1_000n))).campaign!;
    const tokens = await tokensFor("flash", 5_000);
    const client = discount();
    const outcomes = await Promise.all(tokens.map((token) => redeemAs(client, token, "nowruz-1405")));
    const redeemed = outcomes.filter((o) => o.code === "OK");
    expect(redeemed).toHaveLength(1_000);
    expect(outcomes.filter((o) => o.code === "ResourceExhausted")).toHaveLength(4_000);
    expect(redeemed.map((o) => o.position!).sort((a, b) => (a < b ? -1 : 1))).toEqual(oneToN(1_000));
    expect(await redemptions(campaign.id)).toEqual(oneToN(1_000));

    await waitFor(async () => (await tomanCredited("flash", 5_000)) === 1_000n * 1_000_000n, {
      timeoutMs: 20_000,
      what: "1,000 credits of 1,000,000 TOMAN",
    });
    const wallet = h.client(WalletService, h.wallet!.server.url, admin);
    const promotions = await wallet.getBalances({ userId: "flash0" });
    expect(promotions.balances.length).toBeLessThanOrEqual(1);
    const shown = (await discount(tokens[0]).getCampaign({ campaignId: campaign.id })).campaign!;
    expect(shown).toMatchObject({ redeemed: 1_000n, remaining: 0n, code: "" });
    await waitFor(
      async () => (await discount(admin).getCampaignReport({ campaignId: campaign.id })).credited === 1_000n,
      {
        what: "the report's credited count",
      },
    );
    const report = await discount(admin).getCampaignReport({ campaignId: campaign.id });
    expect(report.creditedMoney).toMatchObject({ asset: "TOMAN", amount: 1_000_000_000n });
    // The admin's request funded exactly N credits, and they are spent.
    expect((await wallet.getPromotionBudget({ budgetId: campaign.id })).budget).toMatchObject({
      creditsFunded: 1_000n,
      creditsSpent: 1_000n,
    });
    expect(report.perMinute.reduce((sum, b) => sum + b.redemptions, 0n)).toBe(1_000n);
    expect((await auditLedger(h.wallet!.store)).ok).toBe(true);
  });

  it("gives one user racing 50 requests one redemption and one credit", async () => {
    await discount(admin).createCampaign(sharedCampaign("RACE50", 100n));
    const token = await h.env.token("racer", ["user"]);
    const outcomes = await Promise.all(
      Array.from({ length: 50 }, () => redeemAs(discount(), token, "RACE50")),
    );
    // One wins; the others are told it is theirs already, or (past DISCOUNT_USER_REDEEMS_PER_MINUTE,
    // 20) that they try too fast.
    expect(outcomes.filter((o) => o.code === "OK")).toHaveLength(1);
    const refused = outcomes.filter((o) => o.code !== "OK").map((o) => o.code);
    expect(new Set(refused)).toEqual(new Set(["AlreadyExists", "ResourceExhausted"]));
    expect(refused.filter((code) => code === "AlreadyExists")).toHaveLength(19);
    await waitFor(async () => (await tomanCredited("racer", 1)) === 1_000_000n, {
      what: "the racer's credit",
    });
  });
});

describe("per-user limits", () => {
  it("let a user redeem as often as the campaign allows, and no more", async () => {
    await discount(admin).createCampaign(sharedCampaign("TWICE", 10n, { perUserLimit: 2 }));
    const token = await h.env.token("twice", ["user"]);
    const outcomes = [];
    for (let i = 0; i < 3; i++) outcomes.push(await redeemAs(discount(), token, "TWICE"));
    expect(outcomes.map((o) => [o.code, o.position])).toEqual([
      ["OK", 1n],
      ["OK", 2n],
      ["AlreadyExists", undefined],
    ]);
  });
});

describe("single-use codes", () => {
  it("are generated once, stored hashed, and each redeems once", async () => {
    const campaign = (
      await discount(admin).createCampaign({
        ...sharedCampaign("", 0n),
        kind: CampaignKind.SINGLE_USE,
        money: { asset: "COIN", amount: 500n },
      })
    ).campaign!;
    const key = crypto.randomUUID();
    const generated = await discount(admin).generateCodes({
      campaignId: campaign.id,
      count: 20,
      idempotencyKey: key,
    });
    expect(generated.codes).toHaveLength(20);
    expect(generated.campaign?.redemptionLimit).toBe(20n);
    const again = await discount(admin).generateCodes({
      campaignId: campaign.id,
      count: 20,
      idempotencyKey: key,
    });
    expect(again).toMatchObject({ codes: [], alreadyGenerated: true });
    // Each code's credit was funded once, with the admin's token, whatever the retries.
    const budget = await h.client(WalletService, h.wallet!.server.url, admin).getPromotionBudget({
      budgetId: campaign.id,
    });
    expect(budget.budget).toMatchObject({ creditsFunded: 20n, money: { asset: "COIN", amount: 500n } });
    const stored = await h.discount.orm.em.fork().execute<{ hash: Buffer }[]>("select hash from codes");
    expect(
      stored.some((row) => generated.codes.some((code) => row.hash.toString("utf8").includes(code))),
    ).toBe(false);

    const tokens = await tokensFor("card", 20);
    const first = await Promise.all(generated.codes.map((code, i) => redeemAs(discount(), tokens[i]!, code)));
    expect(first.map((o) => o.code)).toEqual(Array(20).fill("OK"));
    const second = await Promise.all(
      generated.codes.map((code, i) => redeemAs(discount(), tokens[(i + 1) % 20]!, code)),
    );
    expect(second.map((o) => [o.code, o.message])).toEqual(
      Array(20).fill(["AlreadyExists", "this code has already been redeemed"]),
    );
    expect(await redemptions(campaign.id)).toEqual(oneToN(20));
  });
});

describe("refusals", () => {
  it("answer each outcome with its own code and change nothing", async () => {
    const user = await h.env.token("refused", ["user"]);
    const start = timestampFromDate(new Date(Date.now() + 3_600_000));
    const end = timestampFromDate(new Date(Date.now() + 7_200_000));
    await discount(admin).createCampaign(sharedCampaign("LATER1", 10n, { startTime: start, endTime: end }));
    const draft = (await discount(admin).createCampaign(sharedCampaign("DRAFT1", 10n, { activate: false })))
      .campaign!;
    expect(await codeOf(discount(user).redeem({ code: "LATER1" }))).toBe("FailedPrecondition");
    expect(await codeOf(discount(user).redeem({ code: "DRAFT1" }))).toBe("FailedPrecondition");
    await discount(admin).setCampaignStatus({ campaignId: draft.id, status: CampaignStatus.ACTIVE });
    await discount(admin).setCampaignStatus({ campaignId: draft.id, status: CampaignStatus.PAUSED });
    expect(await codeOf(discount(user).redeem({ code: "DRAFT1" }))).toBe("FailedPrecondition");
    await discount(admin).setCampaignStatus({ campaignId: draft.id, status: CampaignStatus.ACTIVE });
    expect((await discount(user).redeem({ code: "DRAFT1" })).position).toBe(1n);
    expect(await codeOf(discount(user).redeem({ code: "DRAFT1" }))).toBe("AlreadyExists");
    expect(await codeOf(discount(user).redeem({ code: "NOSUCHCODE" }))).toBe("NotFound");
    expect(await codeOf(discount(user).redeem({ code: "" }))).toBe("InvalidArgument");
    expect(await codeOf(discount(user).createCampaign(sharedCampaign("USERMADE", 1n)))).toBe(
      "PermissionDenied",
    );
    expect(await codeOf(discount(admin).createCampaign(sharedCampaign("NOWRUZ1405", 5n)))).toBe(
      "InvalidArgument",
    );
    expect(
      await codeOf(
        discount(admin).createCampaign({
          ...sharedCampaign("BADASSET", 5n),
          money: { asset: "GOLD", amount: 1n },
        }),
      ),
    ).toBe("InvalidArgument");
    await discount(admin).setCampaignStatus({ campaignId: draft.id, status: CampaignStatus.ENDED });
    expect(
      await codeOf(
        discount(admin).setCampaignStatus({ campaignId: draft.id, status: CampaignStatus.ACTIVE }),
      ),
    ).toBe("FailedPrecondition");
    expect(await codeOf(discount(user).redeem({ code: "DRAFT1" }))).toBe("FailedPrecondition");
  });
});

describe("faults", () => {
  it("records every redemption while the wallet is down, and credits them all once it is back", async () => {
    // Funding the campaign's budget needs the wallet; redeeming does not.
    await discount(admin).createCampaign(sharedCampaign("WALLETDOWN", 1_000n));
    await h.stopWallet();
    try {
      const tokens = await tokensFor("down", 1_500);
      const outcomes = await Promise.all(tokens.map((token) => redeemAs(discount(), token, "WALLETDOWN")));
      expect(outcomes.filter((o) => o.code === "OK")).toHaveLength(1_000);
    } finally {
      await h.startWallet();
    }
    await waitFor(async () => (await tomanCredited("down", 1_500)) === 1_000n * 1_000_000n, {
      timeoutMs: 20_000,
      what: "1,000 credits after the wallet came back",
    });
    expect((await auditLedger(h.wallet!.store)).ok).toBe(true);
  });

  it("gives exactly N across two replicas", async () => {
    const second = await startDiscount({
      ...h.env.env,
      PORT: "0",
      ...fastRetries,
      WALLET_URL: h.wallet!.server.url,
    });
    try {
      const campaign = (await discount(admin).createCampaign(sharedCampaign("TWOREPLICAS", 300n))).campaign!;
      const tokens = await tokensFor("pair", 1_000);
      const urls = [h.discount.server.url, second.server.url];
      const clients = urls.map((url) => discount(undefined, url));
      const outcomes = await Promise.all(
        tokens.map((token, i) => redeemAs(clients[i % 2]!, token, "TWOREPLICAS")),
      );
      expect(outcomes.filter((o) => o.code === "OK")).toHaveLength(300);
      expect(await redemptions(campaign.id)).toEqual(oneToN(300));
      // Both replicas learn the exhaustion and refuse from memory: no claim reaches the database.
      const replicas = [h.discount, second];
      await waitFor(() => replicas.every((r) => r.cache.isExhausted(campaign.id)), {
        // Announced at most 10 times a second, behind the crowd's last claims on a busy machine.
        timeoutMs: 30_000,
        what: "both replicas know the campaign is exhausted",
      });
      const applied = replicas.map((r) => r.store.claimsApplied);
      const late = await h.env.token("latecomer", ["user"]);
      for (const client of clients)
        expect((await redeemAs(client, late, "TWOREPLICAS")).code).toBe("ResourceExhausted");
      expect(replicas.map((r) => r.store.claimsApplied)).toEqual(applied);
    } finally {
      await second.close();
    }
  });
});
