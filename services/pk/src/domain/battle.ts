// Pure battle rules: who may battle whom, what a tie does, how a result changes a host's
// record. No I/O. States and results are pk.v1's enums; the database stores their numbers.

import { defineErrors } from "@ovation/errors";
import { BattleMode, BattleResult, Side, TiePolicy } from "@ovation/proto/gen/ovation/pk/v1/pk_pb.ts";

export const pkLimits = {
  teamSideMax: 4,
  durationDefaultSeconds: 300,
  /** The shortest battle a deployment allows by default (PK_DURATION_MIN_SECONDS). */
  durationMinSeconds: 30,
  durationMaxSeconds: 1_800,
  bonusRoundDefaultSeconds: 60,
  /** The shortest bonus round by default (PK_BONUS_ROUND_MIN_SECONDS). */
  bonusRoundMinSeconds: 10,
  bonusRoundMaxSeconds: 600,
  bonusRoundsMax: 3,
  topSupporters: 3,
  pageSizeDefault: 20,
  pageSizeMax: 50,
  multiplierMin: 2,
  multiplierMax: 10,
  windowMinSeconds: 10,
  windowMaxSeconds: 86_400,
  windowsListed: 100,
} as const;

/** The pk domain's operating errors, each with the kind of failure it is (@ovation/errors). */
export const PkError = defineErrors("pk", {
  invalid_battle: "invalid_argument",
  battle_not_found: "not_found",
  not_invited: "permission_denied",
  not_creator: "permission_denied",
  not_pending: "failed_precondition",
  host_busy: "failed_precondition",
  host_not_live: "failed_precondition",
  /** The invitee declined or let expire this inviter's last invitation too recently; retry later. */
  invite_cooldown: "resource_exhausted",
  idempotency_conflict: "already_exists",
});
export type PkError = InstanceType<typeof PkError>;
export type PkErrorCode = PkError["code"];

export interface BattleRequest {
  mode: BattleMode;
  sideA: readonly string[];
  sideB: readonly string[];
  durationSeconds: number;
  tiePolicy: TiePolicy;
  bonusRoundSeconds: number;
  bonusRoundsMax: number;
}

export interface BattleSettings {
  mode: typeof BattleMode.SOLO | typeof BattleMode.TEAM;
  sides: { hostId: string; side: typeof Side.A | typeof Side.B }[];
  durationSeconds: number;
  tiePolicy: typeof TiePolicy.DRAW | typeof TiePolicy.BONUS_ROUND;
  bonusRoundSeconds: number;
  bonusRoundsMax: number;
}

/** The deployment's shortest battle and bonus round (configuration). */
export interface DurationMinimums {
  durationMinSeconds: number;
  bonusRoundMinSeconds: number;
}

export const defaultMinimums: DurationMinimums = {
  durationMinSeconds: pkLimits.durationMinSeconds,
  bonusRoundMinSeconds: pkLimits.bonusRoundMinSeconds,
};

/**
 * Checks a battle request and fills its defaults. A host creating a battle must be on side A
 * (the side that invites); an admin may pair any hosts. Throws PkError(invalid_battle).
 */
export function battleSettings(
  request: BattleRequest,
  creator: { id: string; admin: boolean },
  minimums: DurationMinimums = defaultMinimums,
): BattleSettings {
  const invalid = (message: string) => new PkError("invalid_battle", message);
  const mode =
    request.mode === BattleMode.SOLO
      ? BattleMode.SOLO
      : request.mode === BattleMode.TEAM
        ? BattleMode.TEAM
        : undefined;
  if (mode === undefined) throw invalid("mode must be SOLO or TEAM");
  const sideMax = mode === BattleMode.SOLO ? 1 : pkLimits.teamSideMax;
  for (const [name, side] of [
    ["side_a", request.sideA],
    ["side_b", request.sideB],
  ] as const) {
    if (side.length < 1 || side.length > sideMax)
      throw invalid(
        mode === BattleMode.SOLO
          ? `${name} must hold exactly one host in a SOLO battle`
          : `${name} must hold 1..${sideMax} hosts in a TEAM battle`,
      );
  }
  const everyone = [...request.sideA, ...request.sideB];
  if (new Set(everyone).size !== everyone.length) throw invalid("a host can be in a battle only once");
  if (!creator.admin && !request.sideA.includes(creator.id))
    throw invalid("a host inviting others must be on side_a");
  if (request.durationSeconds !== 0 && request.durationSeconds < minimums.durationMinSeconds)
    throw invalid(`duration_seconds must be at least ${minimums.durationMinSeconds}`);
  if (request.bonusRoundSeconds !== 0 && request.bonusRoundSeconds < minimums.bonusRoundMinSeconds)
    throw invalid(`bonus_round_seconds must be at least ${minimums.bonusRoundMinSeconds}`);
  const tiePolicy = request.tiePolicy === TiePolicy.DRAW ? TiePolicy.DRAW : TiePolicy.BONUS_ROUND;
  return {
    mode,
    sides: [
      ...request.sideA.map((hostId) => ({ hostId, side: Side.A })),
      ...request.sideB.map((hostId) => ({ hostId, side: Side.B })),
    ],
    durationSeconds: request.durationSeconds || pkLimits.durationDefaultSeconds,
    tiePolicy,
    bonusRoundSeconds: request.bonusRoundSeconds || pkLimits.bonusRoundDefaultSeconds,
    bonusRoundsMax: tiePolicy === TiePolicy.DRAW ? 0 : request.bonusRoundsMax || 1,
  };
}

export interface Standing {
  scoreA: bigint;
  scoreB: bigint;
  tiePolicy: TiePolicy;
  bonusRoundsPlayed: number;
  bonusRoundsMax: number;
  /** The side whose every host ended their room, if one did. */
  forfeitSide: Side | undefined;
}

export type Decision = { kind: "bonus_round" } | { kind: "settle"; result: BattleResult };

/** What a battle whose time is up does: a winner, another bonus round, or a draw. */
export function decide(standing: Standing): Decision {
  if (standing.forfeitSide === Side.A) return { kind: "settle", result: BattleResult.SIDE_B };
  if (standing.forfeitSide === Side.B) return { kind: "settle", result: BattleResult.SIDE_A };
  if (standing.scoreA > standing.scoreB) return { kind: "settle", result: BattleResult.SIDE_A };
  if (standing.scoreB > standing.scoreA) return { kind: "settle", result: BattleResult.SIDE_B };
  if (standing.tiePolicy === TiePolicy.BONUS_ROUND && standing.bonusRoundsPlayed < standing.bonusRoundsMax)
    return { kind: "bonus_round" };
  return { kind: "settle", result: BattleResult.DRAW };
}

export type Outcome = "win" | "loss" | "draw";

export function outcomeOf(side: Side, result: BattleResult): Outcome {
  if (result === BattleResult.DRAW) return "draw";
  return (side === Side.A) === (result === BattleResult.SIDE_A) ? "win" : "loss";
}

export interface HostRecordCounts {
  wins: number;
  losses: number;
  draws: number;
  winStreak: number;
}

/** A host's record after one more settled battle: a loss or a draw ends a win streak. */
export function recordAfter(record: HostRecordCounts, outcome: Outcome): HostRecordCounts {
  switch (outcome) {
    case "win":
      return { ...record, wins: record.wins + 1, winStreak: record.winStreak + 1 };
    case "loss":
      return { ...record, losses: record.losses + 1, winStreak: 0 };
    case "draw":
      return { ...record, draws: record.draws + 1, winStreak: 0 };
  }
}

/** Milliseconds left until `endsAt`, never negative. */
export const remainingMs = (endsAt: Date | null, now: Date): number =>
  endsAt === null ? 0 : Math.max(0, endsAt.getTime() - now.getTime());
