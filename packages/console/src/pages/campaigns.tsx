// A flash campaign live: its counter follows `campaign.changed` on the `campaign:<id>` channel,
// and the chart shows redemptions per second, sampled from that counter once a second. The API
// has no list of campaigns, so the page opens one by id (`./ov demo` prints its link) and
// remembers the ones opened in this browser.
import { ok, type Schema } from "@ovation/client";
import { useEffect, useRef, useState } from "preact/hooks";
import { TimeChart } from "../components/chart.tsx";
import { coins, enumLabel, timeLabel } from "../format.ts";
import { appendSample, type Series, useChannel } from "../live.ts";
import { useSession } from "../session.ts";
import { OpenById, remember } from "./open-by-id.tsx";

type Campaign = Schema<"ovation.discount.v1.Campaign">;

const sampleMs = 1_000;
const chartPoints = 120;

export function CampaignsPage({ campaignId }: { campaignId: string | undefined }) {
  if (campaignId === undefined)
    return (
      <OpenById
        page="campaigns"
        title="Campaigns"
        what="campaign"
        hint="A campaign's id, from its creation or ./ov demo."
      />
    );
  return <CampaignView campaignId={campaignId} />;
}

function CampaignView({ campaignId }: { campaignId: string }) {
  const { client } = useSession();
  const [campaign, setCampaign] = useState<Campaign | undefined>(undefined);
  const [error, setError] = useState<string | undefined>(undefined);
  const [rates, setRates] = useState<Series>({ times: [], values: [] });
  const redeemed = useRef<bigint | undefined>(undefined);

  const load = async () => {
    try {
      const loaded = (
        await ok(client.api.GET("/api/discount/campaigns/{campaignId}", { params: { path: { campaignId } } }))
      ).campaign;
      setCampaign(loaded);
      redeemed.current = BigInt(loaded?.redeemed ?? "0");
      setError(undefined);
      remember("campaigns", campaignId, loaded?.name ?? campaignId);
    } catch (failure) {
      setError(String(failure));
    }
  };
  useEffect(() => void load(), [client, campaignId]);
  const channel = useChannel(
    client,
    `campaign:${campaignId}`,
    (message) => {
      redeemed.current = BigInt(message.data.redeemed);
      setCampaign((shown) =>
        shown === undefined
          ? shown
          : {
              ...shown,
              redeemed: message.data.redeemed,
              remaining: message.data.remaining,
              status: message.data.status as Campaign["status"],
            },
      );
    },
    () => void load(),
  );
  useRedemptionRate(redeemed, setRates);

  if (campaign === undefined)
    return <section>{error === undefined ? <p>Loading…</p> : <p class="error">{error}</p>}</section>;
  return (
    <section>
      <h1>{campaign.name}</h1>
      <p class="hint">
        {enumLabel(campaign.kind, "CAMPAIGN_KIND")} · {coins(campaign.money?.amount, campaign.money?.asset)}{" "}
        each · {enumLabel(campaign.status, "CAMPAIGN_STATUS")} · until {timeLabel(campaign.endTime)} ·{" "}
        <span data-testid="channel-state">counter {channel}</span>
      </p>
      <p class="counter" data-testid="counter">
        <span data-testid="redeemed">{campaign.redeemed}</span> / {campaign.redemptionLimit} redeemed
        <span class="hint"> ({campaign.remaining} left)</span>
      </p>
      <TimeChart
        title="Redemptions per second"
        unit="per second"
        times={rates.times}
        lines={[{ label: "redemptions/s", values: rates.values }]}
      />
    </section>
  );
}

/** Samples the counter every second into a series of rates. */
function useRedemptionRate(
  redeemed: { current: bigint | undefined },
  setRates: (update: (rates: Series) => Series) => void,
) {
  useEffect(() => {
    let previous: { time: number; count: bigint } | undefined;
    const timer = setInterval(() => {
      const count = redeemed.current;
      if (count === undefined) return;
      const time = Date.now();
      if (previous !== undefined) {
        const rate = Number(count - previous.count) / ((time - previous.time) / 1000);
        setRates((rates) => appendSample(rates, time / 1000, rate, chartPoints));
      }
      previous = { time, count };
    }, sampleMs);
    return () => clearInterval(timer);
  }, [redeemed, setRates]);
}
