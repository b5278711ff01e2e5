// Discount records as protobuf messages: responses and event payloads.
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { eventOf, type OutboxEvent } from "@ovation/events";
import { type Campaign, CampaignSchema } from "@ovation/proto/gen/ovation/discount/v1/discount_pb.ts";
import {
  type CampaignChanged,
  CampaignChangedSchema,
  RedemptionRecordedSchema,
} from "@ovation/proto/gen/ovation/discount/v1/events_pb.ts";
import { MoneySchema } from "@ovation/proto/gen/ovation/type/v1/money_pb.ts";
import type { CampaignRow, ClaimRequest } from "./ports.ts";

export const discountSubjects = {
  redemptionRecorded: "discount.redemption.recorded",
  campaignChanged: "discount.campaign.changed",
} as const;

/** A campaign; its shared code only for those who may see it (admins). */
export function campaignMessage(row: CampaignRow, showCode: boolean): Campaign {
  return create(CampaignSchema, {
    id: row.id,
    name: row.name,
    kind: row.kind,
    code: showCode ? (row.code ?? "") : "",
    money: create(MoneySchema, { asset: row.asset, amount: row.amount }),
    redemptionLimit: row.redemptionLimit,
    perUserLimit: row.perUserLimit,
    startTime: timestampFromDate(row.startsAt),
    endTime: timestampFromDate(row.endsAt),
    status: row.status,
    redeemed: row.redeemed,
    remaining: row.redemptionLimit - row.redeemed,
    createTime: timestampFromDate(row.createdAt),
  });
}

export function redemptionEvent(redeemed: {
  request: ClaimRequest;
  position: bigint;
  at: Date;
}): OutboxEvent {
  return eventOf(
    RedemptionRecordedSchema,
    create(RedemptionRecordedSchema, {
      redemptionId: redeemed.request.id,
      campaignId: redeemed.request.campaignId,
      userId: redeemed.request.userId,
      money: create(MoneySchema, redeemed.request.money),
      position: redeemed.position,
      redeemTime: timestampFromDate(redeemed.at),
    }),
    discountSubjects.redemptionRecorded,
    redeemed.request.id,
  );
}

/** A campaign's counters and status as every replica hears them. */
export function campaignChanged(row: CampaignRow): CampaignChanged {
  return create(CampaignChangedSchema, {
    campaignId: row.id,
    redeemed: row.redeemed,
    remaining: row.redemptionLimit - row.redeemed,
    status: row.status,
    exhausted: row.redemptionLimit > 0n && row.redeemed >= row.redemptionLimit,
  });
}

export function campaignChangedEvent(row: CampaignRow): OutboxEvent {
  return eventOf(CampaignChangedSchema, campaignChanged(row), discountSubjects.campaignChanged);
}
