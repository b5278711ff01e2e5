// PK records as protobuf messages: the API's responses and the events' payloads.
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { eventOf, type OutboxEvent } from "@ovation/events";
import {
  BattleBonusRoundSchema,
  BattleCancelledSchema,
  BattleEndedSchema,
  BattleInvitedSchema,
  BattleScoredSchema,
  BattleStartedSchema,
  BattleTimeUpSchema,
  LateGiftSchema,
} from "@ovation/proto/gen/ovation/pk/v1/events_pb.ts";
import {
  type Battle,
  BattleSchema,
  type BonusWindow,
  BonusWindowSchema,
  ParticipantSchema,
  Side,
  type SideScore,
  SideScoreSchema,
} from "@ovation/proto/gen/ovation/pk/v1/pk_pb.ts";
import { remainingMs } from "../domain/battle.ts";
import type { BattleView, BonusWindowRow, LateGiftRow } from "./ports.ts";

export const pkSubjects = {
  invited: "pk.battle.invited",
  started: "pk.battle.started",
  scored: "pk.battle.scored",
  timeUp: "pk.battle.time_up",
  bonusRound: "pk.battle.bonus_round",
  ended: "pk.battle.ended",
  cancelled: "pk.battle.cancelled",
  lateGift: "pk.battle.late_gift",
} as const;

const time = (at: Date | null) => (at === null ? undefined : timestampFromDate(at));

export function sideScores(view: BattleView): SideScore[] {
  const { battle } = view;
  return [Side.A, Side.B].map((side) => {
    const top = view.supporters.filter((s) => s.side === side);
    return create(SideScoreSchema, {
      side,
      points: side === Side.A ? battle.scoreA : battle.scoreB,
      latePoints: side === Side.A ? battle.lateA : battle.lateB,
      mvpUserId: top[0]?.userId ?? "",
      topSupporters: top.map(({ userId, points }) => ({ userId, points })),
      boostCoins: view.boosts.find((b) => b.side === side)?.coins ?? 0n,
      boosts: view.boosts.find((b) => b.side === side)?.count ?? 0,
    });
  });
}

const participants = (view: BattleView) =>
  view.hosts.map((h) =>
    create(ParticipantSchema, { hostId: h.hostId, side: h.side, status: h.status, points: h.points }),
  );

export function battleMessage(view: BattleView, now: Date = new Date()): Battle {
  const b = view.battle;
  const running = b.state === 2 || b.state === 3;
  return create(BattleSchema, {
    id: b.id,
    mode: b.mode,
    state: b.state,
    participants: participants(view),
    sides: sideScores(view),
    durationSeconds: b.durationSeconds,
    tiePolicy: b.tiePolicy,
    bonusRoundSeconds: b.bonusRoundSeconds,
    bonusRoundsMax: b.bonusRoundsMax,
    bonusRoundsPlayed: b.bonusRoundsPlayed,
    createdBy: b.createdBy,
    createTime: time(b.createdAt),
    inviteExpireTime: b.state === 1 ? time(b.inviteExpiresAt) : undefined,
    startTime: time(b.startedAt),
    endTime: time(b.endsAt),
    remainingMs: BigInt(running ? remainingMs(b.endsAt, now) : 0),
    settleTime: time(b.settledAt),
    result: b.result,
    reason: b.reason,
  });
}

export function bonusWindowMessage(row: BonusWindowRow): BonusWindow {
  return create(BonusWindowSchema, {
    id: row.id,
    multiplier: row.multiplier,
    startTime: timestampFromDate(row.startsAt),
    endTime: timestampFromDate(row.endsAt),
    battleId: row.battleId ?? "",
    giftId: row.giftId ?? "",
  });
}

/** The participants' live rooms, for the room channels. */
const roomIds = (view: BattleView) => view.hosts.flatMap((h) => (h.roomId === null ? [] : [h.roomId]));

export const battleEvents = {
  invited: (view: BattleView): OutboxEvent =>
    eventOf(
      BattleInvitedSchema,
      create(BattleInvitedSchema, { battle: battleMessage(view) }),
      pkSubjects.invited,
    ),
  started: (view: BattleView): OutboxEvent =>
    eventOf(
      BattleStartedSchema,
      create(BattleStartedSchema, { battle: battleMessage(view), roomIds: roomIds(view) }),
      pkSubjects.started,
    ),
  scored: (view: BattleView, scoredAt: Date): OutboxEvent =>
    eventOf(
      BattleScoredSchema,
      create(BattleScoredSchema, {
        battleId: view.battle.id,
        sides: sideScores(view),
        participants: participants(view),
        endTime: time(view.battle.endsAt),
        scoredTime: timestampFromDate(scoredAt),
      }),
      pkSubjects.scored,
    ),
  timeUp: (view: BattleView): OutboxEvent =>
    eventOf(
      BattleTimeUpSchema,
      create(BattleTimeUpSchema, { battle: battleMessage(view) }),
      pkSubjects.timeUp,
    ),
  bonusRound: (view: BattleView): OutboxEvent =>
    eventOf(
      BattleBonusRoundSchema,
      create(BattleBonusRoundSchema, { battle: battleMessage(view) }),
      pkSubjects.bonusRound,
    ),
  ended: (view: BattleView): OutboxEvent =>
    eventOf(
      BattleEndedSchema,
      create(BattleEndedSchema, { battle: battleMessage(view), roomIds: roomIds(view) }),
      pkSubjects.ended,
    ),
  cancelled: (view: BattleView): OutboxEvent =>
    eventOf(
      BattleCancelledSchema,
      create(BattleCancelledSchema, { battle: battleMessage(view) }),
      pkSubjects.cancelled,
    ),
  lateGift: (gift: LateGiftRow): OutboxEvent =>
    eventOf(
      LateGiftSchema,
      create(LateGiftSchema, {
        battleId: gift.battleId,
        sendId: gift.sendId,
        side: gift.side,
        points: gift.points,
        commitTime: timestampFromDate(gift.committedAt),
      }),
      pkSubjects.lateGift,
    ),
};
