// Retries against the real wallet, Postgres and NATS, with replies lost through the test kit's
// fault proxy (decision 0031). A retried Redeem with its idempotency key takes no second slot
// and no second credit, and gets its redemption back also after the campaign filled or its
// single-use code was used; a key reused for another code is refused. A CreateCampaign retried
// with the same key and the start left out is the same request, also when sent many at once.
import { CampaignKind, DiscountService } from "@ovation/proto/gen/ovation/discount/v1/discount_pb.ts";
import { FaultProxy, waitFor } from "@ovation/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { codeOf, type DiscountHarness, sharedCampaign, startDiscountHarness } from "./helpers.ts";

let h: DiscountHarness;
let proxy: FaultProxy;
let admin: string;
const discount = (token?: string) => h.client(DiscountService, h.discount.server.url, token);
/** The discount service behind the fault proxy, as a client whose replies can be lost. */
const behindProxy = (token: string) =>
  h.client(DiscountService, proxy.url(h.discount.server.url).replace(/\/$/, ""), token);

beforeAll(async () => {
  h = await startDiscountHarness();
  proxy = await FaultProxy.start(h.discount.server.url);
  admin = await h.env.token("ops", ["admin"]);
});
afterAll(async () => {
  await proxy?.close();
  await h?.close();
});

async function redemptionsOf(userId: string): Promise<{ id: string; position: string }[]> {
  return h.discount.orm.em
    .fork()
    .execute("select id, position::text from redemptions where user_id = ? order by position", [userId]);
}

/**
 * Redeems while every reply is lost: the request reaches the service and is recorded, the
 * caller only sees its deadline pass, as a phone that lost its connection would.
 */
async function redeemWithLostReply(
  token: string,
  userId: string,
  request: { code: string; idempotencyKey: string },
): Promise<{ id: string; position: string }> {
  const before = (await redemptionsOf(userId)).length;
  proxy.loseReplies();
  try {
    expect(await codeOf(behindProxy(token).redeem(request, { timeoutMs: 1_000 }))).toBe("DeadlineExceeded");
    const recorded = await waitFor(async () => {
      const rows = await redemptionsOf(userId);
      return rows.length > before && rows.at(-1);
    });
    return recorded;
  } finally {
    proxy.restore();
  }
}

describe("a retried Redeem", () => {
  it("takes no second slot and no second credit when the campaign allows three per user", async () => {
    const campaign = (
      await discount(admin).createCampaign(sharedCampaign("THRICE", 10n, { perUserLimit: 3 }))
    ).campaign!;
    const user = await h.env.token("retrier", ["user"]);
    const key = crypto.randomUUID();
    const recorded = await redeemWithLostReply(user, "retrier", { code: "THRICE", idempotencyKey: key });
    const retried = await discount(user).redeem({ code: "thrice", idempotencyKey: key });
    const again = await discount(user).redeem({ code: "THRICE", idempotencyKey: key });
    expect(retried).toMatchObject({ redemptionId: recorded.id, position: 1n, campaignId: campaign.id });
    expect(again).toEqual(retried);
    expect(await redemptionsOf("retrier")).toEqual([recorded]);
    // The key is the request's: another code under it is refused, and another key is another
    // redemption, so the per-user limit was not what answered the retries.
    await discount(admin).createCampaign(sharedCampaign("OTHERCODE", 10n));
    expect(await codeOf(discount(user).redeem({ code: "OTHERCODE", idempotencyKey: key }))).toBe(
      "AlreadyExists",
    );
    const second = await discount(user).redeem({ code: "THRICE", idempotencyKey: crypto.randomUUID() });
    expect(second.position).toBe(2n);
    await waitFor(
      async () => (await discount(admin).getCampaignReport({ campaignId: campaign.id })).credited === 2n,
      { what: "two credits" },
    );
    expect(
      (await discount(admin).getCampaignReport({ campaignId: campaign.id })).creditedMoney,
    ).toMatchObject({
      amount: 2_000_000n,
    });
  });

  it("gives a winner whose reply was lost the redemption back after the campaign filled", async () => {
    const campaign = (await discount(admin).createCampaign(sharedCampaign("LASTSLOT", 2n))).campaign!;
    const winner = await h.env.token("lost-winner", ["user"]);
    const key = crypto.randomUUID();
    const recorded = await redeemWithLostReply(winner, "lost-winner", {
      code: "LASTSLOT",
      idempotencyKey: key,
    });
    expect(
      (await discount(await h.env.token("second", ["user"])).redeem({ code: "LASTSLOT" })).position,
    ).toBe(2n);
    // A latecomer's claim tells this replica the campaign is full: from now on it refuses
    // from memory, without asking the database.
    expect(await codeOf(discount(await h.env.token("third", ["user"])).redeem({ code: "LASTSLOT" }))).toBe(
      "ResourceExhausted",
    );
    expect(h.discount.cache.isExhausted(campaign.id)).toBe(true);
    const retried = await discount(winner).redeem({ code: "LASTSLOT", idempotencyKey: key });
    expect(retried).toMatchObject({ redemptionId: recorded.id, position: 1n, redemptionLimit: 2n });
    // Without its key the same user is told what memory knows, as before.
    expect(await codeOf(discount(winner).redeem({ code: "LASTSLOT" }))).toBe("ResourceExhausted");
  });

  it("gives the redemption of a single-use code back although the code is used now", async () => {
    const campaign = (
      await discount(admin).createCampaign({
        ...sharedCampaign("", 0n),
        kind: CampaignKind.SINGLE_USE,
        money: { asset: "COIN", amount: 7n },
      })
    ).campaign!;
    const [code] = (
      await discount(admin).generateCodes({ campaignId: campaign.id, count: 1, idempotencyKey: "one" })
    ).codes;
    const user = await h.env.token("card-holder", ["user"]);
    const key = crypto.randomUUID();
    const recorded = await redeemWithLostReply(user, "card-holder", { code: code!, idempotencyKey: key });
    const retried = await discount(user).redeem({ code: code!.toLowerCase(), idempotencyKey: key });
    expect(retried).toMatchObject({ redemptionId: recorded.id, position: 1n, money: { amount: 7n } });
    expect(await codeOf(discount(user).redeem({ code: code!, idempotencyKey: crypto.randomUUID() }))).toBe(
      "AlreadyExists",
    );
  });
});

describe("a retried CreateCampaign", () => {
  it("with the start left out is the same request: the same campaign, also for duplicates sent at once", async () => {
    const request = sharedCampaign("NOSTART", 5n);
    expect(request).not.toHaveProperty("startTime");
    const first = (await discount(admin).createCampaign(request)).campaign!;
    const retried = (await discount(admin).createCampaign(request)).campaign!;
    expect(retried).toEqual(first);
    const together = sharedCampaign("TOGETHER", 5n);
    const answers = await Promise.all(
      Array.from({ length: 20 }, () => discount(admin).createCampaign(together)),
    );
    expect(new Set(answers.map((a) => a.campaign!.id)).size).toBe(1);
    // Another campaign under the same key is still refused.
    expect(await codeOf(discount(admin).createCampaign({ ...request, name: "another" }))).toBe(
      "AlreadyExists",
    );
  });
});
