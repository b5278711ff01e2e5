import { BattleMode, BattleResult, Side, TiePolicy } from "@ovation/proto/gen/ovation/pk/v1/pk_pb.ts";
import { describe, expect, it } from "vitest";
import { type BattleRequest, battleSettings, decide, outcomeOf, PkError, recordAfter } from "./battle.ts";

const request = (overrides: Partial<BattleRequest>): BattleRequest => ({
  mode: BattleMode.SOLO,
  sideA: ["h1"],
  sideB: ["h2"],
  durationSeconds: 0,
  tiePolicy: TiePolicy.UNSPECIFIED,
  bonusRoundSeconds: 0,
  bonusRoundsMax: 0,
  ...overrides,
});
const host = { id: "h1", admin: false };

describe("battle settings", () => {
  it("fills the defaults: five minutes, one bonus round of a minute on a tie", () => {
    expect(battleSettings(request({}), host)).toEqual({
      mode: BattleMode.SOLO,
      sides: [
        { hostId: "h1", side: Side.A },
        { hostId: "h2", side: Side.B },
      ],
      durationSeconds: 300,
      tiePolicy: TiePolicy.BONUS_ROUND,
      bonusRoundSeconds: 60,
      bonusRoundsMax: 1,
    });
    expect(
      battleSettings(request({ tiePolicy: TiePolicy.DRAW, bonusRoundsMax: 2 }), host).bonusRoundsMax,
    ).toBe(0);
  });

  it.each([
    ["a SOLO side of two", { sideA: ["h1", "h3"] }, "exactly one host"],
    ["an empty side", { sideB: [] }, "exactly one host"],
    ["a TEAM side of five", { mode: BattleMode.TEAM, sideB: ["a", "b", "c", "d", "e"] }, "1..4 hosts"],
    ["a host on both sides", { mode: BattleMode.TEAM, sideA: ["h1"], sideB: ["h2", "h1"] }, "only once"],
    ["an inviter not on side A", { sideA: ["h3"] }, "must be on side_a"],
    ["no mode", { mode: BattleMode.UNSPECIFIED }, "SOLO or TEAM"],
    ["a battle shorter than the minimum", { durationSeconds: 29 }, "at least 30"],
    ["a bonus round shorter than the minimum", { bonusRoundSeconds: 9 }, "at least 10"],
  ])("refuses %s", (_name, overrides, message) => {
    expect(() => battleSettings(request(overrides), host)).toThrow(PkError);
    expect(() => battleSettings(request(overrides), host)).toThrow(message);
  });

  it("lets an admin pair any hosts", () => {
    expect(
      battleSettings(request({ sideA: ["x"], sideB: ["y"] }), { id: "ops", admin: true }).sides,
    ).toHaveLength(2);
  });
});

describe("decide", () => {
  const standing = {
    scoreA: 10n,
    scoreB: 10n,
    tiePolicy: TiePolicy.BONUS_ROUND,
    bonusRoundsPlayed: 0,
    bonusRoundsMax: 2,
    forfeitSide: undefined,
  };

  it("gives the higher total the win", () => {
    expect(decide({ ...standing, scoreA: 11n })).toEqual({ kind: "settle", result: BattleResult.SIDE_A });
    expect(decide({ ...standing, scoreB: 11n })).toEqual({ kind: "settle", result: BattleResult.SIDE_B });
  });

  it("plays bonus rounds on a tie up to the limit, then draws", () => {
    expect(decide(standing)).toEqual({ kind: "bonus_round" });
    expect(decide({ ...standing, bonusRoundsPlayed: 2 })).toEqual({
      kind: "settle",
      result: BattleResult.DRAW,
    });
    expect(decide({ ...standing, tiePolicy: TiePolicy.DRAW })).toEqual({
      kind: "settle",
      result: BattleResult.DRAW,
    });
  });

  it("gives a forfeit to the other side whatever the score", () => {
    expect(decide({ ...standing, scoreA: 99n, forfeitSide: Side.A })).toEqual({
      kind: "settle",
      result: BattleResult.SIDE_B,
    });
  });
});

describe("host records", () => {
  it("counts wins, losses and draws, and a loss or a draw ends the streak", () => {
    let record = { wins: 0, losses: 0, draws: 0, winStreak: 0 };
    record = recordAfter(record, outcomeOf(Side.A, BattleResult.SIDE_A));
    record = recordAfter(record, outcomeOf(Side.B, BattleResult.SIDE_B));
    expect(record).toEqual({ wins: 2, losses: 0, draws: 0, winStreak: 2 });
    record = recordAfter(record, outcomeOf(Side.A, BattleResult.DRAW));
    expect(record).toEqual({ wins: 2, losses: 0, draws: 1, winStreak: 0 });
    record = recordAfter(record, outcomeOf(Side.A, BattleResult.SIDE_B));
    expect(record).toEqual({ wins: 2, losses: 1, draws: 1, winStreak: 0 });
  });
});
