// DiscountService handlers: validate, authorize, call a use case, shape the response.
import { create } from "@bufbuild/protobuf";
import { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import { isAdmin, requireIdentity, requireRole } from "@ovation/auth";
import {
  type DiscountService,
  WatchCampaignResponseSchema,
} from "@ovation/proto/gen/ovation/discount/v1/discount_pb.ts";
import type { CampaignCache } from "../app/campaign-cache.ts";
import { createCampaign, generateCodes, setCampaignStatus } from "../app/campaigns.ts";
import { campaignMessage } from "../app/messages.ts";
import type { AnnounceCampaigns, CampaignRepository, CampaignRow, FundBudget } from "../app/ports.ts";
import { type RedeemDeps, redeem } from "../app/redeem.ts";
import { type WatchSlots, watchCampaign } from "../app/watch-campaign.ts";
import { DiscountError, discountLimits } from "../domain/campaign.ts";
import { requestSchemas as schemas, validate } from "./validate.ts";

export interface DiscountApiDeps extends RedeemDeps {
  store: CampaignRepository;
  cache: CampaignCache;
  /** Announces campaigns' changed counters or status inside the changing transaction. */
  announce: AnnounceCampaigns;
  assets: readonly string[];
  fund: FundBudget;
  /** WatchCampaign streams open per user and in all. */
  slots: WatchSlots;
}

async function campaignOrThrow(store: CampaignRepository, id: string): Promise<CampaignRow> {
  const campaign = await store.campaign(store.fork(), id);
  if (campaign === null) throw new DiscountError("campaign_not_found", `no campaign ${id}`);
  return campaign;
}

/** The first address of X-Forwarded-For (set by the gateway); empty when called directly. */
const clientAddress = (headers: Headers) => (headers.get("x-forwarded-for") ?? "").split(",")[0]!.trim();

export function discountServiceImpl(deps: DiscountApiDeps): ServiceImpl<typeof DiscountService> {
  const { store, announce } = deps;
  return {
    async createCampaign(request, ctx) {
      const admin = requireRole(ctx, "admin");
      const valid = validate(schemas.createCampaign, request);
      if (!deps.assets.includes(valid.money.asset))
        throw new ConnectError(
          `invalid request: money.asset: must be one of ${deps.assets.join(", ")}`,
          Code.InvalidArgument,
        );
      // Left out, the start is "now": resolved when the campaign is stored, and fingerprinted
      // as "now" so that a retry with the same key is the same request.
      const startsAt = valid.startTime === undefined ? undefined : timestampDate(request.startTime!);
      const endsAt = timestampDate(request.endTime!);
      const windowStart = startsAt ?? new Date();
      if (endsAt <= windowStart || endsAt.getTime() - windowStart.getTime() > discountLimits.windowMaxMs)
        throw new ConnectError(
          "invalid request: end_time: must be after start_time and at most a year later",
          Code.InvalidArgument,
        );
      const row = await createCampaign(store, announce, deps.fund, {
        adminId: admin.subject,
        adminToken: admin.token,
        name: valid.name,
        kind: valid.kind,
        code: valid.code === "" ? null : valid.code,
        asset: valid.money.asset,
        amount: valid.money.amount,
        redemptionLimit: valid.redemptionLimit,
        perUserLimit: valid.perUserLimit || 1,
        startsAt,
        endsAt,
        activate: valid.activate,
        idempotencyKey: valid.idempotencyKey,
      });
      return { campaign: campaignMessage(row, true) };
    },

    async setCampaignStatus(request, ctx) {
      requireRole(ctx, "admin");
      const valid = validate(schemas.setStatus, request);
      const row = await setCampaignStatus(store, announce, valid.campaignId, valid.status);
      return { campaign: campaignMessage(row, true) };
    },

    async generateCodes(request, ctx) {
      const admin = requireRole(ctx, "admin");
      const valid = validate(schemas.generateCodes, request);
      const result = await generateCodes(store, announce, deps.fund, { ...valid, adminToken: admin.token });
      return {
        codes: result.codes,
        alreadyGenerated: result.alreadyGenerated,
        campaign: campaignMessage(result.campaign, true),
      };
    },

    async redeem(request, ctx) {
      const caller = requireIdentity(ctx);
      const { code, idempotencyKey } = validate(schemas.redeem, request);
      const redeemed = await redeem(deps, {
        userId: caller.subject,
        address: clientAddress(ctx.requestHeader),
        code,
        idempotencyKey: idempotencyKey === "" ? null : idempotencyKey,
      });
      return {
        redemptionId: redeemed.redemptionId,
        campaignId: redeemed.campaignId,
        money: redeemed.money,
        position: redeemed.position,
        redemptionLimit: redeemed.limit,
        redeemTime: timestampFromDate(redeemed.at),
      };
    },

    async getCampaign(request, ctx) {
      const caller = requireIdentity(ctx);
      const { campaignId } = validate(schemas.campaign, request);
      return { campaign: campaignMessage(await campaignOrThrow(store, campaignId), isAdmin(caller)) };
    },

    async getCampaignReport(request, ctx) {
      requireRole(ctx, "admin");
      const { campaignId } = validate(schemas.campaign, request);
      const campaign = await campaignOrThrow(store, campaignId);
      const em = store.fork();
      const report = await store.report(em, campaignId);
      return {
        campaign: campaignMessage(campaign, true),
        perMinute: report.perMinute.map((b) => ({
          startTime: timestampFromDate(b.at),
          redemptions: b.redemptions,
        })),
        credited: report.credited,
        creditedMoney: { asset: campaign.asset, amount: report.credited * campaign.amount },
        codes: await store.codeCount(em, campaignId),
      };
    },

    async *watchCampaign(request, ctx) {
      const caller = requireIdentity(ctx);
      const { campaignId } = validate(schemas.campaign, request);
      const watching = watchCampaign(deps, { userId: caller.subject, campaignId, signal: ctx.signal });
      for await (const counters of watching)
        yield create(WatchCampaignResponseSchema, { campaignId, ...counters });
    },
  };
}
