// A replica that missed the event that made an exhausted campaign redeemable again refuses it
// only until it reads the database again (decision 0031). Two replicas reach NATS through the
// test kit's fault proxy; while it is cut, an admin adds codes to an exhausted single-use
// campaign through a third replica, whose CampaignChanged cannot reach them. The replica with
// a short DISCOUNT_CACHE_REVALIDATE_MS redeems the new code within its interval, NATS still cut;
// the one with an hour's interval does so as soon as NATS is back, though the event is gone.
// And an announcement that arrives late, older than the exhaustion a replica heard (two claims'
// announcements published in the other order than they committed in), does not make it forget.
import { create, toBinary } from "@bufbuild/protobuf";
import { jetstreamManager } from "@nats-io/jetstream";
import {
  CampaignKind,
  CampaignStatus,
  DiscountService,
} from "@ovation/proto/gen/ovation/discount/v1/discount_pb.ts";
import { CampaignChangedSchema } from "@ovation/proto/gen/ovation/discount/v1/events_pb.ts";
import { FaultProxy, waitFor } from "@ovation/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { discountSubjects } from "../src/app/messages.ts";
import { type DiscountApp, startDiscount } from "../src/main.ts";
import { type DiscountHarness, fastRetries, sharedCampaign, startDiscountHarness } from "./helpers.ts";

/** The timer replica's interval: it must notice within a few of them. */
const revalidateMs = 500;

let h: DiscountHarness;
let proxy: FaultProxy;
let admin: string;
/** Re-reads every 500 ms. */
let onTimer: DiscountApp;
/** Re-reads every hour: only a reconnect can make it re-read within the test. */
let hourly: DiscountApp;

beforeAll(async () => {
  h = await startDiscountHarness();
  proxy = await FaultProxy.start(h.env.natsUrl);
  const behindProxy = {
    ...h.env.env,
    ...fastRetries,
    PORT: "0",
    WALLET_URL: h.wallet!.server.url,
    NATS_URL: proxy.url(h.env.natsUrl),
  };
  onTimer = await startDiscount({ ...behindProxy, DISCOUNT_CACHE_REVALIDATE_MS: String(revalidateMs) });
  hourly = await startDiscount({ ...behindProxy, DISCOUNT_CACHE_REVALIDATE_MS: "3600000" });
  admin = await h.env.token("ops", ["admin"]);
});
afterAll(async () => {
  await hourly?.close();
  await onTimer?.close();
  await proxy?.close();
  await h?.close();
});

const client = (app: DiscountApp, token?: string) => h.client(DiscountService, app.server.url, token);

/** A single-use campaign with one code, redeemed: exhausted, and every replica knows it. */
async function exhaustedCampaign(): Promise<string> {
  const campaign = (
    await client(h.discount, admin).createCampaign({
      ...sharedCampaign("", 0n),
      kind: CampaignKind.SINGLE_USE,
      money: { asset: "COIN", amount: 3n },
    })
  ).campaign!;
  const [code] = (
    await client(h.discount, admin).generateCodes({
      campaignId: campaign.id,
      count: 1,
      idempotencyKey: "first",
    })
  ).codes;
  await client(h.discount, await h.env.token(`first-${campaign.id}`, ["user"])).redeem({ code: code! });
  await waitFor(() => [h.discount, onTimer, hourly].every((app) => app.cache.isExhausted(campaign.id)), {
    what: "every replica knows the campaign is exhausted",
  });
  return campaign.id;
}

/** Adds a code while the proxied replicas' NATS is cut; the replica on direct NATS hears it. */
async function addCodeUnheard(campaignId: string): Promise<string> {
  const [code] = (
    await client(h.discount, admin).generateCodes({ campaignId, count: 1, idempotencyKey: "more" })
  ).codes;
  await waitFor(() => !h.discount.cache.isExhausted(campaignId), {
    what: "the CampaignChanged event, heard where NATS works",
  });
  return code!;
}

describe("an exhausted campaign that grew while a replica's NATS was cut", () => {
  it("is redeemable on that replica within its re-validation interval, NATS still cut", async () => {
    const campaignId = await exhaustedCampaign();
    proxy.cut();
    try {
      const code = await addCodeUnheard(campaignId);
      await waitFor(() => !onTimer.cache.isExhausted(campaignId), {
        timeoutMs: 10 * revalidateMs,
        what: "the timer replica re-reads the campaign",
      });
      // The event never reached the proxied replicas: the hourly one still refuses from memory.
      expect(hourly.cache.isExhausted(campaignId)).toBe(true);
      const redeemed = await client(onTimer, await h.env.token("second-chance", ["user"])).redeem({ code });
      expect(redeemed.position).toBe(2n);
    } finally {
      proxy.restore();
    }
  });

  it("is redeemable as soon as NATS is back, though the event is gone for good", async () => {
    const campaignId = await exhaustedCampaign();
    proxy.cut();
    let code: string;
    try {
      code = await addCodeUnheard(campaignId);
      // The event is dropped from the stream (as limits or a lost delivery would drop it), so
      // a consumer that resumes after the outage cannot deliver it late.
      const nats = await h.env.connectNats("ops");
      try {
        await (await jetstreamManager(nats)).streams.purge(h.discount.bus.names.stream("DISCOUNT"), {
          filter: h.discount.bus.names.subject(discountSubjects.campaignChanged),
        });
      } finally {
        await nats.close();
      }
      expect(hourly.cache.isExhausted(campaignId)).toBe(true);
    } finally {
      proxy.restore();
    }
    await waitFor(() => !hourly.cache.isExhausted(campaignId), {
      timeoutMs: 10_000,
      what: "the hourly replica re-reads the campaign after reconnecting",
    });
    const redeemed = await client(hourly, await h.env.token("after-outage", ["user"])).redeem({ code });
    expect(redeemed.position).toBe(2n);
  });
});

describe("a late announcement", () => {
  it("that says a campaign is redeemable does not make a replica forget it is exhausted", async () => {
    const campaignId = await exhaustedCampaign();
    const announce = (id: string, redeemed: bigint, remaining: bigint) =>
      h.discount.bus.js.publish(
        h.discount.bus.names.subject(discountSubjects.campaignChanged),
        toBinary(
          CampaignChangedSchema,
          create(CampaignChangedSchema, {
            campaignId: id,
            redeemed,
            remaining,
            status: CampaignStatus.ACTIVE,
            exhausted: remaining === 0n,
          }),
        ),
        { msgID: crypto.randomUUID() },
      );
    // What a claim that committed before the last one announced, published after it.
    await announce(campaignId, 0n, 1n);
    // Events arrive in order: once this one is heard, the late one was too.
    const marker = crypto.randomUUID();
    await announce(marker, 1n, 0n);
    await waitFor(() => hourly.cache.isExhausted(marker), { what: "the marker announcement" });
    // Before, the late event made it redeemable in memory until an hour's re-read.
    expect(hourly.cache.isExhausted(campaignId)).toBe(true);
    expect(onTimer.cache.isExhausted(campaignId)).toBe(true);
  });
});
