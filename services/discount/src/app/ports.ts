// What the discount use cases need from the outside world, declared here so that they depend
// on these interfaces: store/ implements the campaign repository, clients/wallet.ts funds
// budgets, and main.ts wires the concrete classes. The dependency points inward: the adapters
// import these types, never the other way round.
import type { EntityManager } from "@ovation/db";
import type { CampaignKind, CampaignStatus } from "@ovation/proto/gen/ovation/discount/v1/discount_pb.ts";

export interface CampaignRow {
  id: string;
  name: string;
  kind: CampaignKind;
  code: string | null;
  asset: string;
  amount: bigint;
  redemptionLimit: bigint;
  perUserLimit: number;
  startsAt: Date;
  endsAt: Date;
  status: CampaignStatus;
  redeemed: bigint;
  createdBy: string;
  requestHash: Buffer;
  createdAt: Date;
}

export interface ClaimRequest {
  /** The redemption id, if it is recorded (UUIDv7). */
  id: string;
  campaignId: string;
  userId: string;
  codeId: string | null;
  /** The request's idempotency key, scoped to the user; null when it has none. */
  idempotencyKey: string | null;
  /** What the redemption credits (the campaign's money), for its event. */
  money: { asset: string; amount: bigint };
}

/** A recorded redemption, as a retry with its key gets it back. */
export interface RecordedRedemption {
  redemptionId: string;
  position: bigint;
  /** The campaign's limit now. */
  limit: bigint;
  at: Date;
}

export type ClaimOutcome =
  | ({ outcome: "redeemed" | "replayed" } & RecordedRedemption)
  | { outcome: "already" | "exhausted" | "conflict" }
  | { outcome: "inactive"; reason: string };

/** A redemption an idempotency key recorded, with what it redeemed (its fingerprint). */
export interface KeyedRedemption extends RecordedRedemption {
  campaignId: string;
  codeId: string | null;
}

export interface CampaignReport {
  perMinute: { at: Date; redemptions: bigint }[];
  credited: bigint;
}

/** Campaigns, their single-use codes and their redemptions. */
export interface CampaignRepository {
  /** A new unit of work; `transactional` on it runs a transaction. */
  fork(): EntityManager;
  /** Claims one redemption in the next group-committed batch, with its outbox event. */
  claim(request: ClaimRequest): Promise<ClaimOutcome>;
  /**
   * The redemptions a user's idempotency key recorded (one, unless two campaigns' claims raced),
   * looked up in the next batch of such lookups: a crowd retrying after exhaustion costs one
   * query per batch, not one per request.
   */
  redemptionsByKey(userId: string, key: string): Promise<KeyedRedemption[]>;
  campaign(em: EntityManager, id: string): Promise<CampaignRow | null>;
  /** The campaigns with these ids that exist, read now (for re-validating a cache). */
  campaigns(em: EntityManager, ids: readonly string[]): Promise<CampaignRow[]>;
  /** The campaign, row-locked until the transaction ends. */
  lockCampaign(em: EntityManager, id: string): Promise<CampaignRow | null>;
  campaignByCode(em: EntityManager, code: string): Promise<CampaignRow | null>;
  campaignByKey(em: EntityManager, createdBy: string, key: string): Promise<CampaignRow | null>;
  insertCampaign(em: EntityManager, campaign: CampaignRow & { idempotencyKey: string }): Promise<void>;
  setStatus(em: EntityManager, id: string, status: number): Promise<void>;
  /** The single-use code with this hash: its id and campaign, and whether it was redeemed. */
  codeByHash(
    em: EntityManager,
    hash: Buffer,
  ): Promise<{ id: string; campaignId: string; redeemed: boolean } | null>;
  codeBatchExists(em: EntityManager, campaignId: string, key: string): Promise<boolean>;
  /** Stores a batch of code hashes and raises the campaign's limit by as many. */
  addCodes(
    em: EntityManager,
    campaignId: string,
    key: string,
    codes: { id: string; hash: Buffer }[],
  ): Promise<void>;
  codeCount(em: EntityManager, campaignId: string): Promise<bigint>;
  /** Redemptions per minute, and what the wallet has credited. */
  report(em: EntityManager, campaignId: string): Promise<CampaignReport>;
}

/** Announces campaigns' changed counters or status inside the changing transaction. */
export type AnnounceCampaigns = (em: EntityManager, campaignIds: string[]) => Promise<void>;

/**
 * Funds a campaign's promotion budget in the wallet, with the admin's own token: the discount
 * service cannot fund anything itself, and the wallet pays redemptions only out of it. A
 * refusal is thrown as the wallet gave it; infrastructure trouble as UNAVAILABLE, and the
 * admin retries with the same key.
 */
export type FundBudget = (funding: {
  budgetId: string;
  asset: string;
  amount: bigint;
  credits: bigint;
  idempotencyKey: string;
  adminToken: string;
}) => Promise<void>;
