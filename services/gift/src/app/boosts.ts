// Use cases: buy a boost, expire boosts, rank live rooms.
//
// Buying: the target is resolved (a host who has gone live, a live room, or a side of a PK
// battle that is not over, asked of the PK service), the purchase is recorded under its
// idempotency key with its BoostPurchased payload, and one wallet transfer buyer → revenue
// (SPEND) carries that event: the debit and the event commit together in the wallet. A retry
// sends the same bytes, so the wallet answers with the first transfer. A purchase the wallet
// refused is never forgotten (a retry may be paying under it): its key pays at most once.
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { lockProjection } from "@ovation/events";
import { BattleState, Side } from "@ovation/proto/gen/ovation/pk/v1/pk_pb.ts";
import { type BoostPurchased, BoostPurchasedSchema } from "@ovation/proto/gen/ovation/wallet/v1/events_pb.ts";
import { TransferKind } from "@ovation/proto/gen/ovation/wallet/v1/wallet_pb.ts";
import { traceHeaders } from "@ovation/server";
import { v7 as uuidv7 } from "uuid";
import { BoostTargetType, type BoostTargetTypeValue, expiryOf, parsePkSideTarget } from "../domain/boosts.ts";
import { GiftError, roomStatus } from "../domain/rules.ts";
import type { BoostClaim, BoostRepository, GiftPayments, PkBattles, Rooms } from "./ports.ts";

export const boostSubject = "wallet.boost.purchased";
export const discoveryConsumerName = "gift-discovery";

export interface BoostDeps {
  gifts: Rooms;
  discovery: BoostRepository;
  payments: GiftPayments;
  /** Answers UNAVAILABLE when PK_URL is not configured: PK sides cannot be boosted then. */
  pk: PkBattles;
}

export interface PurchaseBoostCommand {
  buyerId: string;
  targetType: BoostTargetTypeValue;
  targetId: string;
  amount: bigint;
  durationHours: number;
  idempotencyKey: string;
  /** The buyer's own bearer token, passed to the wallet as their consent to pay. */
  consentToken: string;
}

export interface PurchaseBoostResult {
  boost: BoostPurchased;
  balance: bigint;
}

const uuidPattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

const boostableBattleStates: readonly number[] = [
  BattleState.PENDING,
  BattleState.ACTIVE,
  BattleState.BONUS_ROUND,
];

export async function purchaseBoost(
  deps: BoostDeps,
  command: PurchaseBoostCommand,
): Promise<PurchaseBoostResult> {
  let hostIds: string[];
  try {
    hostIds = await resolveTarget(deps, command.targetType, command.targetId);
  } catch (error) {
    // A refusal may be the retry of a boost already bought (its room has ended since, its
    // battle is over): the retry gets the first answer, as it would have without the refusal.
    const earlier = error instanceof GiftError ? await deps.discovery.earlierBoost(command) : undefined;
    if (earlier?.outcome !== "existing") throw error;
    return pay(deps, command, earlier);
  }
  const id = uuidv7();
  const start = new Date();
  const fresh = create(BoostPurchasedSchema, {
    boostId: id,
    buyerId: command.buyerId,
    targetType: command.targetType,
    targetId: command.targetId,
    hostIds,
    money: { asset: "COIN", amount: command.amount },
    durationHours: command.durationHours,
    startTime: timestampFromDate(start),
    expireTime: timestampFromDate(expiryOf(start, command.durationHours)),
  });
  const claim = await deps.discovery.claimBoost({
    ...command,
    id,
    event: toBinary(BoostPurchasedSchema, fresh),
  });
  if (claim.outcome === "conflict") {
    throw new GiftError("idempotency_conflict", "idempotency key reused with a different request");
  }
  return pay(deps, command, claim);
}

/** The wallet transfer that pays for a claimed boost and carries its event. */
async function pay(
  deps: BoostDeps,
  command: PurchaseBoostCommand,
  claim: Exclude<BoostClaim, { outcome: "conflict" }>,
): Promise<PurchaseBoostResult> {
  const boost = fromBinary(BoostPurchasedSchema, claim.event);
  const paid = await deps.payments.transfer({
    debitOwner: `user:${command.buyerId}`,
    consentToken: command.consentToken,
    creditOwner: "system:revenue",
    money: { asset: "COIN", amount: command.amount },
    kind: TransferKind.SPEND,
    reference: claim.id,
    metadata: { boostTargetType: String(command.targetType), boostTarget: command.targetId },
    idempotencyKey: `boost:${claim.id}`,
    event: {
      eventId: claim.id,
      subject: boostSubject,
      type: BoostPurchasedSchema.typeName,
      payload: claim.event,
      headers: traceHeaders(),
    },
  });
  if ("paid" in paid) return { boost, balance: paid.paid.debitBalance };
  // The purchase stays recorded, as a gift send's claim does: a retry with the same key tries
  // the same payment again, under the same wallet key, so it is paid at most once.
  throw new GiftError("insufficient_balance", `insufficient balance: ${command.amount} COIN needed`);
}

/** The hosts a target benefits; refuses targets that do not exist or cannot be boosted now. */
async function resolveTarget(
  deps: BoostDeps,
  type: BoostTargetTypeValue,
  targetId: string,
): Promise<string[]> {
  switch (type) {
    case BoostTargetType.HOST:
      if (!(await deps.discovery.isHost(targetId)))
        throw new GiftError("boost_target_not_found", `${targetId} is not a host`);
      return [targetId];
    case BoostTargetType.ROOM: {
      if (!uuidPattern.test(targetId))
        throw new GiftError("invalid_boost_target", "a room is boosted by its id (a UUID)");
      const room = await deps.gifts.room(targetId);
      if (room === null) throw new GiftError("boost_target_not_found", `no room ${targetId}`);
      if (room.status !== roomStatus.live)
        throw new GiftError("room_not_live", `room ${targetId} is not live`);
      return [room.hostId];
    }
    case BoostTargetType.PK_SIDE:
      return resolvePkSide(deps, targetId);
    default:
      throw new GiftError("boost_target_not_found", "unknown target type");
  }
}

async function resolvePkSide(deps: BoostDeps, targetId: string): Promise<string[]> {
  const target = parsePkSideTarget(targetId);
  if (target === undefined)
    throw new GiftError("invalid_boost_target", 'a PK side is "<battle id>:A" or "<battle id>:B"');
  const side = await deps.pk.sideOfBattle(target.battleId, target.side === "A" ? Side.A : Side.B);
  if (side === undefined) throw new GiftError("boost_target_not_found", `no battle ${target.battleId}`);
  if (!boostableBattleStates.includes(side.state))
    throw new GiftError("boost_target_over", `battle ${target.battleId} is over`);
  return side.hostIds;
}

/** The boost timer: expires what is due, holding the projection's lock against a replay's swap. */
export async function expireBoosts(discovery: BoostRepository): Promise<number> {
  return discovery.fork().transactional(async (em) => {
    await lockProjection(em, discoveryConsumerName, "shared");
    return discovery.expireDueBoosts(em);
  });
}
