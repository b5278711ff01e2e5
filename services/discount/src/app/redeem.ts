// Redeem: the one hot path. A code is resolved in memory where it can be (shared codes and
// exhausted campaigns are cached), then queued for the next claim batch, which records the
// redemption with its position and its RedemptionRecorded event in one transaction. The
// wallet credits the user from that event, so a redemption never waits for the wallet, and
// a wallet that is down only delays the credit. An idempotency key is looked up before any
// refusal, so a retry gets the redemption it recorded back (decision 0031).
import type { Money } from "@ovation/proto/gen/ovation/type/v1/money_pb.ts";
import type { Logger } from "pino";
import { RateLimiterMemory, RateLimiterRes } from "rate-limiter-flexible";
import { v7 as uuidv7 } from "uuid";
import {
  DiscountError,
  hashCode,
  looksSingleUse,
  normalizeCode,
  sharedCodePattern,
} from "../domain/campaign.ts";
import type { CampaignCache } from "./campaign-cache.ts";
import type { CampaignRepository, CampaignRow, KeyedRedemption, RecordedRedemption } from "./ports.ts";

export interface RedeemLimits {
  userRedeemsPerMinute: number;
  userUnknownPerHour: number;
  addressUnknownPerHour: number;
}

/** Per-process throttles (rate-limiter-flexible's memory store), like the gateway's. */
export class RedeemThrottle {
  readonly #redeems: RateLimiterMemory;
  readonly #userUnknown: RateLimiterMemory;
  readonly #addressUnknown: RateLimiterMemory;

  constructor(limits: RedeemLimits) {
    this.#redeems = new RateLimiterMemory({
      keyPrefix: "redeem",
      points: limits.userRedeemsPerMinute,
      duration: 60,
    });
    this.#userUnknown = new RateLimiterMemory({
      keyPrefix: "unknown-user",
      points: limits.userUnknownPerHour,
      duration: 3600,
    });
    this.#addressUnknown = new RateLimiterMemory({
      keyPrefix: "unknown-address",
      points: limits.addressUnknownPerHour,
      duration: 3600,
    });
  }

  async redeem(userId: string): Promise<void> {
    await consume(this.#redeems, userId, "too many redeem attempts");
  }

  /** Before a code is looked up: refuses a user or address that guessed too often. */
  async mayGuess(userId: string, address: string): Promise<void> {
    await Promise.all([
      blocked(this.#userUnknown, userId),
      address === "" ? undefined : blocked(this.#addressUnknown, address),
    ]);
  }

  /** Counts an unknown code against the user and the address. */
  async unknown(userId: string, address: string): Promise<void> {
    await Promise.all([
      this.#userUnknown.penalty(userId, 1),
      address === "" ? undefined : this.#addressUnknown.penalty(address, 1),
    ]);
  }
}

async function consume(limiter: RateLimiterMemory, key: string, message: string): Promise<void> {
  try {
    await limiter.consume(key);
  } catch (refusal) {
    if (!(refusal instanceof RateLimiterRes)) throw refusal;
    throw new DiscountError("rate_limited", message, { retryAfterMs: refusal.msBeforeNext });
  }
}

async function blocked(limiter: RateLimiterMemory, key: string): Promise<void> {
  const state = await limiter.get(key);
  if (state !== null && state.consumedPoints >= limiter.points)
    throw new DiscountError("rate_limited", "too many redeem attempts", { retryAfterMs: state.msBeforeNext });
}

export interface RedeemDeps {
  store: Pick<CampaignRepository, "fork" | "codeByHash" | "claim" | "redemptionsByKey">;
  cache: CampaignCache;
  throttle: RedeemThrottle;
  logger: Logger;
}

export interface Redeemed {
  redemptionId: string;
  campaignId: string;
  money: Pick<Money, "asset" | "amount">;
  position: bigint;
  limit: bigint;
  at: Date;
}

export interface RedeemCommand {
  userId: string;
  address: string;
  code: string;
  /** Scoped to the user; null when the client sent none. */
  idempotencyKey: string | null;
}

/** What a code names: its campaign and, for a single-use code, the code and whether it was used. */
interface Target {
  campaign: CampaignRow;
  codeId: string | null;
  codeUsed: boolean;
}

export async function redeem(deps: RedeemDeps, command: RedeemCommand): Promise<Redeemed> {
  const { cache, store, throttle } = deps;
  await throttle.redeem(command.userId);
  const code = normalizeCode(command.code);
  await throttle.mayGuess(command.userId, command.address);
  const target = await resolveCode(deps, command, code);
  const { campaign, codeId } = target;
  const refusal = refusalFromMemory(cache, target, Date.now());
  if (refusal !== undefined) {
    // A retry of a redemption its key recorded gets it back, whatever memory says now: the
    // campaign may have filled or expired since, and a single-use code is used by that very
    // redemption. Only keyed requests pay for the lookup (batched, no lock).
    if (command.idempotencyKey !== null) {
      const earlier = await store.redemptionsByKey(command.userId, command.idempotencyKey);
      if (earlier.length > 0) return answerOf(campaign, replayOf(earlier, campaign.id, codeId));
    }
    throw refusal;
  }
  const id = uuidv7();
  const money = { asset: campaign.asset, amount: campaign.amount };
  const claim = { id, campaignId: campaign.id, userId: command.userId, codeId, money };
  const outcome = await store.claim({ ...claim, idempotencyKey: command.idempotencyKey });
  switch (outcome.outcome) {
    case "redeemed":
    case "replayed":
      return answerOf(campaign, outcome);
    case "conflict":
      throw keyConflict();
    case "exhausted":
      cache.markExhausted(campaign.id);
      throw exhausted(campaign.id);
    case "already":
      throw new DiscountError(
        "already_redeemed",
        codeId === null ? "you have already redeemed this code" : "this code has already been redeemed",
      );
    case "inactive":
      throw new DiscountError("inactive", outcome.reason);
  }
}

/** The campaign a code names; an unknown code counts against the user and the address. */
async function resolveCode(deps: RedeemDeps, command: RedeemCommand, code: string): Promise<Target> {
  const { cache, store, throttle } = deps;
  let campaignId: string | undefined;
  let codeId: string | null = null;
  let codeUsed = false;
  if (looksSingleUse(code)) {
    const found = await store.codeByHash(store.fork(), hashCode(code));
    if (found !== null) ({ campaignId, id: codeId, redeemed: codeUsed } = found);
  }
  if (campaignId === undefined && sharedCodePattern.test(code)) campaignId = (await cache.byCode(code))?.id;
  if (campaignId === undefined) {
    await throttle.unknown(command.userId, command.address);
    deps.logger.warn({ userId: command.userId, address: command.address }, "redeem of an unknown code");
    throw new DiscountError("unknown_code", "unknown code");
  }
  return { campaign: (await cache.byId(campaignId))!, codeId, codeUsed };
}

/** A refusal decided without the database: a used code, the window, a known exhaustion. */
function refusalFromMemory(cache: CampaignCache, target: Target, now: number): DiscountError | undefined {
  const { campaign } = target;
  if (target.codeUsed) return new DiscountError("already_redeemed", "this code has already been redeemed");
  if (now < campaign.startsAt.getTime()) return new DiscountError("inactive", "the campaign has not started");
  if (now >= campaign.endsAt.getTime()) return new DiscountError("inactive", "the campaign has expired");
  if (cache.isExhausted(campaign.id)) return exhausted(campaign.id);
  return undefined;
}

/**
 * "Exhausted" names its campaign (ErrorInfo metadata campaignId), so a gateway that refuses
 * later redeems of the same code from memory can forget that refusal when the campaign's
 * CampaignChanged says it has slots again (decision 0034).
 */
const exhausted = (campaignId: string) =>
  new DiscountError("exhausted", "campaign exhausted", { details: { campaignId } });

/**
 * The redemption a key recorded for this very request (same campaign, same code); a key that
 * recorded the redemption of another code is refused, like claim_redemptions' "conflict".
 */
function replayOf(earlier: KeyedRedemption[], campaignId: string, codeId: string | null): RecordedRedemption {
  const same = earlier.find((r) => r.campaignId === campaignId && r.codeId === codeId);
  if (same === undefined) throw keyConflict();
  return same;
}

const keyConflict = () =>
  new DiscountError("idempotency_conflict", "idempotency key reused with another code");

function answerOf(campaign: CampaignRow, redemption: RecordedRedemption): Redeemed {
  return {
    redemptionId: redemption.redemptionId,
    campaignId: campaign.id,
    money: { asset: campaign.asset, amount: campaign.amount },
    position: redemption.position,
    limit: redemption.limit,
    at: redemption.at,
  };
}
