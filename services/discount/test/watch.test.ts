// WatchCampaign holds bounded resources per user (decision 0031): a user's streams beyond
// DISCOUNT_WATCHES_PER_USER are refused with RESOURCE_EXHAUSTED and a closed stream frees its
// slot; a stream ends when the campaign's end time passes, not only when it is ENDED; and a
// slow reader holds one pending update, the latest, however many changes it did not read.
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { CampaignStatus, DiscountService } from "@ovation/proto/gen/ovation/discount/v1/discount_pb.ts";
import type { CampaignChanged } from "@ovation/proto/gen/ovation/discount/v1/events_pb.ts";
import { waitFor } from "@ovation/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { WatchSlots, watchCampaign } from "../src/app/watch-campaign.ts";
import { codeOf, type DiscountHarness, sharedCampaign, startDiscountHarness } from "./helpers.ts";

let h: DiscountHarness;
let admin: string;
const discount = (token?: string) => h.client(DiscountService, h.discount.server.url, token);

beforeAll(async () => {
  h = await startDiscountHarness({ DISCOUNT_WATCHES_PER_USER: "2" });
  admin = await h.env.token("ops", ["admin"]);
});
afterAll(() => h?.close());

interface Watch {
  /** The first update, or the refusal's code. */
  first: Promise<string>;
  /** Every update, once the stream has ended (or the refusal). */
  done: Promise<{ redeemed: bigint; status: CampaignStatus }[]>;
  close(): void;
}

function watch(token: string, campaignId: string): Watch {
  const abort = new AbortController();
  let started!: (outcome: string) => void;
  const first = new Promise<string>((resolve) => (started = resolve));
  const done = (async () => {
    const seen: { redeemed: bigint; status: CampaignStatus }[] = [];
    try {
      for await (const update of discount(token).watchCampaign({ campaignId }, { signal: abort.signal })) {
        seen.push({ redeemed: update.redeemed, status: update.status });
        started("streaming");
      }
    } catch (error) {
      started(await codeOf(Promise.reject(error)));
    }
    started("ended");
    return seen;
  })();
  return { first, done, close: () => abort.abort() };
}

/** Fails if `promise` has not settled within `ms`: for things that must happen, never for absence. */
const within = <T>(promise: Promise<T>, ms: number, what: string) =>
  Promise.race([
    promise,
    new Promise<never>((_, reject) =>
      setTimeout(() => reject(new Error(`${what} did not happen within ${ms} ms`)), ms),
    ),
  ]);

describe("WatchCampaign", () => {
  it("refuses a user's third stream at once, serves other users, and frees a slot when a stream closes", async () => {
    const campaign = (await discount(admin).createCampaign(sharedCampaign("WATCHED", 5n))).campaign!;
    const [user, other] = await Promise.all([h.env.token("eager", ["user"]), h.env.token("calm", ["user"])]);
    const streams = [watch(user, campaign.id), watch(user, campaign.id)];
    expect(await Promise.all(streams.map((s) => s.first))).toEqual(["streaming", "streaming"]);
    const third = watch(user, campaign.id);
    expect(await third.first).toBe("ResourceExhausted");
    const calm = watch(other, campaign.id);
    expect(await calm.first).toBe("streaming");
    streams[0]!.close();
    await streams[0]!.done;
    await waitFor(() => h.discount.slots.open === 2, { what: "the closed stream's slot freed" });
    const again = watch(user, campaign.id);
    expect(await again.first).toBe("streaming");
    for (const stream of [streams[1]!, calm, again]) stream.close();
    await Promise.all([streams[1]!.done, calm.done, again.done]);
    await waitFor(() => h.discount.slots.open === 0, { what: "every slot freed" });
  });

  it("ends when the campaign's end time passes, though nobody ended it", async () => {
    const endsAt = new Date(Date.now() + 2_000);
    const campaign = (
      await discount(admin).createCampaign(
        sharedCampaign("SHORTLIVED", 5n, { endTime: timestampFromDate(endsAt) }),
      )
    ).campaign!;
    const stream = watch(await h.env.token("patient", ["user"]), campaign.id);
    expect(await stream.first).toBe("streaming");
    await discount(await h.env.token("quick", ["user"])).redeem({ code: "SHORTLIVED" });
    const seen = await within(stream.done, 10_000, "the stream's end");
    expect(Date.now()).toBeGreaterThanOrEqual(endsAt.getTime());
    expect(seen.at(-1)?.status).toBe(CampaignStatus.ACTIVE);
    await waitFor(() => h.discount.slots.open === 0, { what: "the slot freed" });
  });

  it("gives a slow reader only the latest counters, and its stream's end", async () => {
    const campaign = (await discount(admin).createCampaign(sharedCampaign("SLOWREADER", 50n))).campaign!;
    // The use case itself, read like a stream whose reader stopped pulling.
    const slots = new WatchSlots({ perUser: 1, total: 1 });
    const abort = new AbortController();
    const stream = watchCampaign(
      { store: h.discount.store, cache: h.discount.cache, slots },
      { userId: "slow", campaignId: campaign.id, signal: abort.signal },
    );
    expect((await stream.next()).value).toMatchObject({ redeemed: 0n, remaining: 50n });
    const heard: CampaignChanged[] = [];
    const stopHearing = h.discount.cache.listen(campaign.id, (change) => heard.push(change));
    try {
      // Several announcements the reader does not read: after the first redemption, then after
      // the rest (announced at most every 100 ms, so these are separate changes).
      await discount(await h.env.token("slow-0", ["user"])).redeem({ code: "SLOWREADER" });
      await waitFor(() => heard.some((change) => change.redeemed === 1n), { what: "the first change" });
      for (let i = 1; i < 10; i++)
        await discount(await h.env.token(`slow-${i}`, ["user"])).redeem({ code: "SLOWREADER" });
      await waitFor(() => heard.at(-1)?.redeemed === 10n, { what: "the last change" });
      expect(heard.length).toBeGreaterThanOrEqual(2);
    } finally {
      stopHearing();
    }
    expect((await stream.next()).value).toMatchObject({ redeemed: 10n, remaining: 40n });
    await discount(admin).setCampaignStatus({ campaignId: campaign.id, status: CampaignStatus.ENDED });
    expect((await stream.next()).value).toMatchObject({ redeemed: 10n, status: CampaignStatus.ENDED });
    expect((await stream.next()).done).toBe(true);
    expect(slots.open).toBe(0);
  });
});
