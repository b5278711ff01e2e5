// Abuse: a user redeeming too fast is slowed down; guessing single-use codes is slow per user
// and per address; a flash crowd behind one carrier address is not mistaken for guessing,
// because only unknown codes count against an address. And WatchCampaign streams the counters.

import { ConnectError } from "@connectrpc/connect";
import { CampaignStatus, DiscountService } from "@ovation/proto/gen/ovation/discount/v1/discount_pb.ts";
import { retryPushbackHeader } from "@ovation/server";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { codeOf, type DiscountHarness, sharedCampaign, startDiscountHarness } from "./helpers.ts";

let h: DiscountHarness;
let admin: string;
const discount = (token?: string) => h.client(DiscountService, h.discount.server.url, token);
const from = (address: string) => ({ headers: { "x-forwarded-for": address } });

beforeAll(async () => {
  h = await startDiscountHarness({
    DISCOUNT_USER_REDEEMS_PER_MINUTE: "5",
    DISCOUNT_USER_UNKNOWN_PER_HOUR: "3",
    DISCOUNT_ADDRESS_UNKNOWN_PER_HOUR: "6",
  });
  admin = await h.env.token("ops", ["admin"]);
});
afterAll(() => h?.close());

describe("throttles", () => {
  it("slow down a user who redeems too fast, and say when to come back", async () => {
    await discount(admin).createCampaign(sharedCampaign("HASTY1", 10n));
    const user = discount(await h.env.token("hasty", ["user"]));
    expect((await user.redeem({ code: "HASTY1" })).position).toBe(1n);
    for (let i = 0; i < 4; i++) expect(await codeOf(user.redeem({ code: "HASTY1" }))).toBe("AlreadyExists");
    const refused = await user.redeem({ code: "HASTY1" }).catch((error: unknown) => ConnectError.from(error));
    expect(refused).toBeInstanceOf(ConnectError);
    expect((refused as ConnectError).rawMessage).toBe("too many redeem attempts");
    expect(Number((refused as ConnectError).metadata.get(retryPushbackHeader))).toBeGreaterThan(0);
  });

  it("stop a guesser per user and per address, but not a crowd behind one address", async () => {
    await discount(admin).createCampaign(sharedCampaign("CARRIER", 100n));
    const guesser = discount(await h.env.token("guesser", ["user"]));
    for (let i = 0; i < 3; i++)
      expect(await codeOf(guesser.redeem({ code: `GUESS${i}AAAAAAAAAAA` }, from("198.51.100.1")))).toBe(
        "NotFound",
      );
    // Even a valid code is refused to a user who guessed too often.
    expect(await codeOf(guesser.redeem({ code: "CARRIER" }, from("198.51.100.1")))).toBe("ResourceExhausted");

    // 50 users behind one carrier address all redeem the real code.
    const carrier = "203.0.113.7";
    for (let i = 0; i < 50; i++) {
      const user = discount(await h.env.token(`mobile${i}`, ["user"]));
      expect((await user.redeem({ code: "CARRIER" }, from(carrier))).position).toBe(BigInt(i + 1));
    }
    // Six unknown codes from that address by six users, and the seventh guess is refused.
    for (let i = 0; i < 6; i++) {
      const user = discount(await h.env.token(`prober${i}`, ["user"]));
      expect(await codeOf(user.redeem({ code: `PROBE${i}BBBBBBBBBBB` }, from(carrier)))).toBe("NotFound");
    }
    const seventh = discount(await h.env.token("prober6", ["user"]));
    expect(await codeOf(seventh.redeem({ code: "PROBE6BBBBBBBBBBB" }, from(carrier)))).toBe(
      "ResourceExhausted",
    );
  });
});

describe("WatchCampaign", () => {
  it("streams the counters now, then as they change, until the campaign ends", async () => {
    const campaign = (await discount(admin).createCampaign(sharedCampaign("WATCHME", 3n))).campaign!;
    const seen: { redeemed: bigint; remaining: bigint; status: CampaignStatus }[] = [];
    const watching = (async () => {
      for await (const update of discount(await h.env.token("watcher", ["user"])).watchCampaign({
        campaignId: campaign.id,
      }))
        seen.push({ redeemed: update.redeemed, remaining: update.remaining, status: update.status });
    })();
    for (let i = 0; i < 3; i++)
      await discount(await h.env.token(`w${i}`, ["user"])).redeem({ code: "WATCHME" });
    await discount(admin).setCampaignStatus({ campaignId: campaign.id, status: CampaignStatus.ENDED });
    await watching;
    expect(seen[0]).toMatchObject({ redeemed: 0n, remaining: 3n });
    expect(seen.at(-1)).toMatchObject({ redeemed: 3n, remaining: 0n, status: CampaignStatus.ENDED });
    // Changes within 100 ms of each other are announced together, so steps may be skipped, but
    // never reordered.
    const redeemed = seen.map((u) => u.redeemed);
    expect(redeemed).toEqual([...redeemed].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)));
  });
});
