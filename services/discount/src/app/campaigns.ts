// Admin use cases: create a campaign, change its status, generate single-use codes, report.
import { createHash } from "node:crypto";
import { type EntityManager, lockIdempotencyKey, retryRaces, violatedConstraint } from "@ovation/db";
import { CampaignKind, CampaignStatus } from "@ovation/proto/gen/ovation/discount/v1/discount_pb.ts";
import { v4 as uuidv4, v5 as uuidv5 } from "uuid";
import { DiscountError, discountLimits, generateCode, hashCode } from "../domain/campaign.ts";
import type { AnnounceCampaigns, CampaignRepository, CampaignRow, FundBudget } from "./ports.ts";

/** Campaign ids come from the admin and the idempotency key, so a retry funds the same budget. */
const campaignIdNamespace = "5b0f6a34-8a6f-4c1e-9d43-0c8e2f7f3a11";
export const campaignIdOf = (adminId: string, idempotencyKey: string) =>
  uuidv5(`${adminId}\n${idempotencyKey}`, campaignIdNamespace);

export interface CreateCampaignCommand {
  adminId: string;
  /** The admin's own bearer token, for funding the budget. */
  adminToken: string;
  name: string;
  kind: CampaignKind;
  code: string | null;
  asset: string;
  amount: bigint;
  redemptionLimit: bigint;
  perUserLimit: number;
  /** Undefined: now, when the campaign is stored. */
  startsAt: Date | undefined;
  endsAt: Date;
  activate: boolean;
  idempotencyKey: string;
}

/**
 * The request as the admin sent it: a start left out is "now", not the instant it resolved to,
 * so the same request retried later is still the same request (a given start hashes as before).
 */
function fingerprintOf(command: CreateCampaignCommand): Buffer {
  const { adminId: _admin, adminToken: _token, idempotencyKey: _key, ...fields } = command;
  const sent = { ...fields, startsAt: fields.startsAt ?? "now" };
  return createHash("sha256")
    .update(JSON.stringify(sent, (_k, v) => (typeof v === "bigint" ? v.toString() : v)))
    .digest();
}

/** Runs `work` in a transaction, again when it loses a race. */
const inTransaction = <T>(store: CampaignRepository, work: (em: EntityManager) => Promise<T>) =>
  retryRaces(() => store.fork().transactional(work));

export async function createCampaign(
  store: CampaignRepository,
  announce: AnnounceCampaigns,
  fund: FundBudget,
  command: CreateCampaignCommand,
): Promise<CampaignRow> {
  const hash = fingerprintOf(command);
  const id = campaignIdOf(command.adminId, command.idempotencyKey);
  // A shared code's N credits are funded before the campaign exists, outside any transaction
  // (a call to the wallet); single-use campaigns are funded as their codes are generated.
  const earlier = await store.campaignByKey(store.fork(), command.adminId, command.idempotencyKey);
  if (earlier === null && command.kind === CampaignKind.SHARED_CODE)
    await fund({
      budgetId: id,
      asset: command.asset,
      amount: command.amount,
      credits: command.redemptionLimit,
      idempotencyKey: `campaign:${command.idempotencyKey}`,
      adminToken: command.adminToken,
    });
  try {
    return await inTransaction(store, async (em) => {
      // A duplicate sent at the same moment waits here for the first and returns its campaign,
      // instead of racing it to the unique key and answering 409.
      await lockIdempotencyKey(em, `discount-campaign:${command.adminId}`, command.idempotencyKey);
      const existing = await store.campaignByKey(em, command.adminId, command.idempotencyKey);
      if (existing !== null) {
        if (!existing.requestHash.equals(hash))
          throw new DiscountError("idempotency_conflict", "idempotency key reused with another campaign");
        return existing;
      }
      const row: CampaignRow = {
        id,
        name: command.name,
        kind: command.kind,
        code: command.kind === CampaignKind.SHARED_CODE ? command.code : null,
        asset: command.asset,
        amount: command.amount,
        redemptionLimit: command.kind === CampaignKind.SHARED_CODE ? command.redemptionLimit : 0n,
        perUserLimit: command.perUserLimit,
        startsAt: command.startsAt ?? new Date(),
        endsAt: command.endsAt,
        status: command.activate ? CampaignStatus.ACTIVE : CampaignStatus.DRAFT,
        redeemed: 0n,
        createdBy: command.adminId,
        requestHash: hash,
        createdAt: new Date(),
      };
      await store.insertCampaign(em, { ...row, idempotencyKey: command.idempotencyKey });
      await announce(em, [row.id]);
      return row;
    });
  } catch (error) {
    if (violatedConstraint(error) === "campaigns_code_key")
      throw new DiscountError("invalid_campaign", `another campaign already uses code ${command.code}`);
    throw error;
  }
}

const statusNames: Record<number, string> = { 1: "draft", 2: "active", 3: "paused", 4: "ended" };
const allowedMoves: Record<number, readonly number[]> = {
  [CampaignStatus.DRAFT]: [CampaignStatus.ACTIVE, CampaignStatus.ENDED],
  [CampaignStatus.ACTIVE]: [CampaignStatus.PAUSED, CampaignStatus.ENDED],
  [CampaignStatus.PAUSED]: [CampaignStatus.ACTIVE, CampaignStatus.ENDED],
  [CampaignStatus.ENDED]: [],
};

/** Activate, pause, resume or end. Setting the current status again is a no-op. */
export async function setCampaignStatus(
  store: CampaignRepository,
  announce: AnnounceCampaigns,
  campaignId: string,
  status: CampaignStatus,
): Promise<CampaignRow> {
  return inTransaction(store, async (em) => {
    const campaign = await store.lockCampaign(em, campaignId);
    if (campaign === null) throw new DiscountError("campaign_not_found", `no campaign ${campaignId}`);
    if (campaign.status === status) return campaign;
    if (!allowedMoves[campaign.status]!.includes(status))
      throw new DiscountError(
        "inactive",
        `a ${statusNames[campaign.status]} campaign cannot become ${statusNames[status]}`,
      );
    await store.setStatus(em, campaignId, status);
    await announce(em, [campaignId]);
    return { ...campaign, status };
  });
}

/**
 * New single-use codes: returned once, stored hashed; a retry with the same key returns none.
 * Each code's credit is funded first, with the admin's own token.
 */
export async function generateCodes(
  store: CampaignRepository,
  announce: AnnounceCampaigns,
  fund: FundBudget,
  command: { campaignId: string; count: number; idempotencyKey: string; adminToken: string },
): Promise<{ codes: string[]; alreadyGenerated: boolean; campaign: CampaignRow }> {
  const campaign = await store.campaign(store.fork(), command.campaignId);
  if (campaign?.kind === CampaignKind.SINGLE_USE && campaign.status !== CampaignStatus.ENDED)
    await fund({
      budgetId: campaign.id,
      asset: campaign.asset,
      amount: campaign.amount,
      credits: BigInt(command.count),
      idempotencyKey: `codes:${campaign.id}:${command.idempotencyKey}`,
      adminToken: command.adminToken,
    });
  return inTransaction(store, async (em) => {
    const campaign = await store.lockCampaign(em, command.campaignId);
    if (campaign === null) throw new DiscountError("campaign_not_found", `no campaign ${command.campaignId}`);
    if (campaign.kind !== CampaignKind.SINGLE_USE)
      throw new DiscountError("invalid_campaign", "codes are generated for SINGLE_USE campaigns only");
    if (await store.codeBatchExists(em, command.campaignId, command.idempotencyKey))
      return { codes: [], alreadyGenerated: true, campaign };
    if (campaign.status === CampaignStatus.ENDED)
      throw new DiscountError("inactive", "the campaign has ended");
    if (campaign.redemptionLimit + BigInt(command.count) > BigInt(discountLimits.codesPerCampaignMax))
      throw new DiscountError(
        "invalid_campaign",
        `a campaign holds at most ${discountLimits.codesPerCampaignMax} codes`,
      );
    const codes = Array.from({ length: command.count }, generateCode);
    await store.addCodes(
      em,
      command.campaignId,
      command.idempotencyKey,
      codes.map((code) => ({ id: uuidv4(), hash: hashCode(code) })),
    );
    await announce(em, [command.campaignId]);
    return {
      codes,
      alreadyGenerated: false,
      campaign: { ...campaign, redemptionLimit: campaign.redemptionLimit + BigInt(command.count) },
    };
  });
}
