// Redeem: the one hot path. A code is resolved in memory where it can be (shared codes and
// exhausted campaigns are cached), then queued for the next claim batch, which records the
// redemption with its position and its RedemptionRecorded event in one transaction. The
// wallet credits the user from that event, so a redemption never waits for the wallet, and
// a wallet that is down only delays the credit.
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
import type { CampaignRepository } from "./ports.ts";

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
  store: Pick<CampaignRepository, "fork" | "codeByHash" | "claim">;
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

export async function redeem(
  deps: RedeemDeps,
  command: { userId: string; address: string; code: string },
): Promise<Redeemed> {
  const { cache, store, throttle } = deps;
  await throttle.redeem(command.userId);
  const code = normalizeCode(command.code);
  await throttle.mayGuess(command.userId, command.address);
  let campaignId: string | undefined;
  let codeId: string | null = null;
  if (looksSingleUse(code)) {
    const found = await store.codeByHash(store.fork(), hashCode(code));
    if (found?.redeemed) throw new DiscountError("already_redeemed", "this code has already been redeemed");
    if (found !== null) ({ campaignId, id: codeId } = found);
  }
  if (campaignId === undefined && sharedCodePattern.test(code)) campaignId = (await cache.byCode(code))?.id;
  if (campaignId === undefined) {
    await throttle.unknown(command.userId, command.address);
    deps.logger.warn({ userId: command.userId, address: command.address }, "redeem of an unknown code");
    throw new DiscountError("unknown_code", "unknown code");
  }
  const campaign = (await cache.byId(campaignId))!;
  const now = Date.now();
  if (now < campaign.startsAt.getTime()) throw new DiscountError("inactive", "the campaign has not started");
  if (now >= campaign.endsAt.getTime()) throw new DiscountError("inactive", "the campaign has expired");
  if (cache.isExhausted(campaignId)) throw new DiscountError("exhausted", "campaign exhausted");
  const id = uuidv7();
  const money = { asset: campaign.asset, amount: campaign.amount };
  const outcome = await store.claim({ id, campaignId, userId: command.userId, codeId, money });
  switch (outcome.outcome) {
    case "redeemed":
      return {
        redemptionId: id,
        campaignId,
        money,
        position: outcome.position,
        limit: outcome.limit,
        at: outcome.at,
      };
    case "exhausted":
      cache.markExhausted(campaignId);
      throw new DiscountError("exhausted", "campaign exhausted");
    case "already":
      throw new DiscountError(
        "already_redeemed",
        codeId === null ? "you have already redeemed this code" : "this code has already been redeemed",
      );
    case "inactive":
      throw new DiscountError("inactive", outcome.reason);
  }
}
