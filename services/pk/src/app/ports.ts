// What the battle and bonus-window use cases need from the outside world, declared here so
// that they depend on these interfaces: store/pk-store.ts implements them, and main.ts wires it.
// The dependency points inward: the store imports these types, never the other way round.
// Every method takes the caller's unit of work (`em`): a battle changes state under its row
// lock, and its outbox events and timers commit in the same transaction.
import type { EntityManager } from "@ovation/db";
import type {
  BattleMode,
  BattleResult,
  BattleState,
  ParticipantStatus,
  Side,
  TiePolicy,
} from "@ovation/proto/gen/ovation/pk/v1/pk_pb.ts";
import type { BattleSettings, HostRecordCounts } from "../domain/battle.ts";

export interface BattleRow {
  id: string;
  mode: BattleMode;
  state: BattleState;
  createdBy: string;
  idempotencyKey: string;
  requestHash: Buffer;
  durationSeconds: number;
  tiePolicy: TiePolicy;
  bonusRoundSeconds: number;
  bonusRoundsMax: number;
  bonusRoundsPlayed: number;
  createdAt: Date;
  inviteExpiresAt: Date | null;
  startedAt: Date | null;
  endsAt: Date | null;
  endedAt: Date | null;
  settledAt: Date | null;
  result: BattleResult;
  reason: string;
  scoreA: bigint;
  scoreB: bigint;
  lateA: bigint;
  lateB: bigint;
  forfeitSide: Side | null;
}

export interface HostRow {
  hostId: string;
  side: Side;
  status: ParticipantStatus;
  roomId: string | null;
  points: bigint;
  forfeitedAt: Date | null;
}

export interface SupporterRow {
  side: Side;
  userId: string;
  points: bigint;
}

export interface SideBoostRow {
  side: Side;
  coins: bigint;
  count: number;
}

/** A battle with everything a client sees: hosts, and the top supporters of each side. */
export interface BattleView {
  battle: BattleRow;
  hosts: HostRow[];
  supporters: SupporterRow[];
  boosts: SideBoostRow[];
}

export interface BonusWindowRow {
  id: string;
  multiplier: number;
  startsAt: Date;
  endsAt: Date;
  battleId: string | null;
  giftId: string | null;
  createdBy: string;
  requestHash: Buffer;
}

/** A gift scored after its battle's end or its host's forfeit, as its LateGift event tells it. */
export interface LateGiftRow {
  battleId: string;
  sendId: string;
  side: Side;
  points: bigint;
  committedAt: Date;
}

/** Battles, their hosts and records, and which hosts are live. */
export interface BattleRepository {
  /** A new unit of work; `transactional` on it runs a transaction. */
  fork(): EntityManager;
  /** True when `error` is the refusal of a second pending or running battle for one host. */
  isBusyHost(error: unknown): boolean;
  battleByKey(em: EntityManager, createdBy: string, key: string): Promise<BattleRow | null>;
  /** Battles ENDED before `before` and not settled since, oldest first (the settlement sweep). */
  endedBefore(em: EntityManager, before: Date, limit: number): Promise<string[]>;
  /** The battle, locked until the transaction ends; null when there is none. */
  lockBattle(em: EntityManager, id: string): Promise<BattleRow | null>;
  /**
   * The battle a host is busy in, locked: one they accepted (or created) that is pending, running
   * or waiting for settlement. An invitation they have not answered does not make them busy.
   */
  lockBusyBattle(em: EntityManager, hostId: string): Promise<BattleRow | null>;
  /** Which of these hosts are busy in a battle (see lockBusyBattle). */
  busyHosts(em: EntityManager, hostIds: readonly string[]): Promise<Set<string>>;
  /** The pending battles a host is invited to and has not answered, locked, in id order. */
  lockInvitations(em: EntityManager, hostId: string): Promise<BattleRow[]>;
  /**
   * The invitees `inviterId` may not invite yet, with the end of each one's cool-down: those who
   * declined or let expire an invitation of theirs less than the cool-down ago.
   */
  inviteCooldowns(
    em: EntityManager,
    inviterId: string,
    inviteeIds: readonly string[],
    now: Date,
  ): Promise<Map<string, Date>>;
  /**
   * `inviterId` may not invite these hosts again before `until`. Forgets the inviter's
   * cool-downs that ended before `now`, so the table holds only those in force, give or take.
   */
  startInviteCooldowns(
    em: EntityManager,
    inviterId: string,
    inviteeIds: readonly string[],
    until: Date,
    now: Date,
  ): Promise<void>;
  insertBattle(
    em: EntityManager,
    battle: {
      id: string;
      createdBy: string;
      key: string;
      hash: Buffer;
      createdAt: Date;
      inviteExpiresAt: Date;
    },
    settings: BattleSettings,
    accepted: (hostId: string) => boolean,
  ): Promise<void>;
  hosts(em: EntityManager, battleId: string): Promise<HostRow[]>;
  /** An ACCEPTED host is busy from then on (the database refuses a second busy battle). */
  setHostStatus(
    em: EntityManager,
    battleId: string,
    hostId: string,
    status: ParticipantStatus,
  ): Promise<void>;
  /** The live room of each host that has one. */
  liveRooms(em: EntityManager, hostIds: readonly string[]): Promise<Map<string, string>>;
  start(
    em: EntityManager,
    battleId: string,
    startedAt: Date,
    endsAt: Date,
    rooms: Map<string, string>,
  ): Promise<void>;
  /** Pending → cancelled: the hosts are free again. */
  cancel(em: EntityManager, battleId: string, reason: string): Promise<void>;
  /** Time is up (or a side forfeited): gifts committed from `endsAt` on no longer count. */
  timeUp(
    em: EntityManager,
    battleId: string,
    endsAt: Date,
    endedAt: Date,
    forfeit?: { side: Side; reason: string },
  ): Promise<void>;
  /** A host ended their room: gifts to them committed from `at` on stop counting. */
  forfeitHost(em: EntityManager, battleId: string, hostId: string, at: Date): Promise<void>;
  bonusRound(em: EntityManager, battleId: string, endsAt: Date): Promise<void>;
  settle(
    em: EntityManager,
    battleId: string,
    result: BattleResult,
    settledAt: Date,
    reason: string,
  ): Promise<void>;
  lockRecords(em: EntityManager, hostIds: readonly string[]): Promise<Map<string, HostRecordCounts>>;
  saveRecords(em: EntityManager, records: Map<string, HostRecordCounts>, at: Date): Promise<void>;
  record(em: EntityManager, hostId: string): Promise<HostRecordCounts>;
  view(em: EntityManager, battleId: string): Promise<BattleView | null>;
  /** The host's battles, newest first, strictly before `before` when given. */
  history(
    em: EntityManager,
    hostId: string,
    limit: number,
    before: { at: Date; id: string } | undefined,
  ): Promise<BattleView[]>;
  /**
   * Claims the right to publish these battles' live scores now (at most once per
   * `intervalMs` each), with each claim's time, increasing per battle; the others with
   * unpublished scores, with when they may go next.
   */
  claimScorePublication(
    em: EntityManager,
    battleIds: readonly string[],
    intervalMs: number,
  ): Promise<{ claimed: Map<string, Date>; later: Map<string, Date> }>;
}

/** Admin bonus windows. */
export interface BonusWindowRepository {
  /** A new unit of work; `transactional` on it runs a transaction. */
  fork(): EntityManager;
  windowByKey(em: EntityManager, createdBy: string, key: string): Promise<BonusWindowRow | null>;
  insertWindow(em: EntityManager, window: BonusWindowRow & { key: string }): Promise<void>;
  /** Windows open now or later, soonest first, at most `limit`. */
  openWindows(em: EntityManager, now: Date, limit: number): Promise<BonusWindowRow[]>;
  view(em: EntityManager, battleId: string): Promise<BattleView | null>;
}
