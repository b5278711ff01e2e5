// Battle use cases and timers. Every state change runs in one transaction with the battle row
// locked, schedules or cancels its timers (@ovation/jobs) in that same transaction, and
// announces itself through the outbox: a change, its timers and its event commit together.
//
// Invitations hold no one (docs/decisions/0030): a host is busy only in a battle they accepted
// or created, so an inviter cannot keep another host out of every other battle; joining one
// cancels the host's other invitations; and an inviter whom a host turned down (declined, or let
// the invitation expire) waits PK_REINVITE_COOLDOWN_SECONDS before inviting that host again.
//
// Timers, one job key each per battle: the invitation's expiry, the end of the current window
// (regular time or a bonus round) and the settlement check. Each handler re-reads the battle
// under its lock and does nothing unless the battle is still where the timer expects it, so a
// timer that runs twice, late or after a cancel changes nothing.
import { createHash } from "node:crypto";
import { type EntityManager, lockIdempotencyKey, retryRaces } from "@ovation/db";
import { enqueueEvents } from "@ovation/events";
import { cancelJob, scheduleJob } from "@ovation/jobs";
import { BattleState, ParticipantStatus, Side } from "@ovation/proto/gen/ovation/pk/v1/pk_pb.ts";
import type { Logger } from "pino";
import { v7 as uuidv7 } from "uuid";
import {
  type BattleRequest,
  battleSettings,
  type DurationMinimums,
  decide,
  outcomeOf,
  PkError,
  recordAfter,
} from "../domain/battle.ts";
import { battleEvents } from "./messages.ts";
import type { BattleRepository, BattleRow, BattleView } from "./ports.ts";

export const pkJobs = {
  inviteExpiry: "pk-invite-expire",
  windowEnd: "pk-window-end",
  settle: "pk-settle",
  settleSweep: "pk-settle-sweep",
} as const;

/**
 * Every minute, behind each battle's own settlement job: settles battles still ENDED past their
 * grace period (a settlement job that kept failing and gave up, or went missing), so no battle
 * and none of its hosts stays busy for ever.
 */
export const settleSweepCrontab = `* * * * * ${pkJobs.settleSweep}`;
/** Battles settled per sweep at most; the rest wait a minute. */
const settleSweepMax = 100;

const jobKey = {
  invite: (id: string) => `pk:invite:${id}`,
  end: (id: string) => `pk:end:${id}`,
  settle: (id: string) => `pk:settle:${id}`,
};

/** Between two settlement checks while gifts are still being scored. */
const settleRecheckMs = 250;

export interface BattleTimings extends DurationMinimums {
  inviteTtlSeconds: number;
  reinviteCooldownSeconds: number;
  settleDelayMs: number;
  settleGraceMs: number;
}

export interface BattleDeps {
  store: BattleRepository;
  timings: BattleTimings;
  /**
   * Gift events published but not yet scored; Infinity when it cannot be told (NATS down).
   * Settlement waits for 0, up to the grace period.
   */
  unscoredGifts: () => Promise<number>;
  logger: Logger;
}

export interface Caller {
  id: string;
  admin: boolean;
}

const running = (state: BattleState) => state === BattleState.ACTIVE || state === BattleState.BONUS_ROUND;

async function viewOf(deps: BattleDeps, em: EntityManager, id: string): Promise<BattleView> {
  const view = await deps.store.view(em, id);
  if (view === null) throw new Error(`battle ${id} vanished inside its own transaction`);
  return view;
}

/** Runs `work` in a transaction, again when it loses a race, then maps a busy host to its error. */
async function inTransaction<T>(deps: BattleDeps, work: (em: EntityManager) => Promise<T>): Promise<T> {
  try {
    return await retryRaces(() => deps.store.fork().transactional(work));
  } catch (error) {
    if (deps.store.isBusyHost(error))
      throw new PkError("host_busy", "a host is already in a pending or running battle");
    throw error;
  }
}

async function lockOrThrow(deps: BattleDeps, em: EntityManager, id: string): Promise<BattleRow> {
  const battle = await deps.store.lockBattle(em, id);
  if (battle === null) throw new PkError("battle_not_found", `no battle ${id}`);
  return battle;
}

async function requireLive(deps: BattleDeps, em: EntityManager, hostIds: readonly string[]) {
  const rooms = await deps.store.liveRooms(em, hostIds);
  const offline = hostIds.filter((id) => !rooms.has(id));
  if (offline.length > 0)
    throw new PkError("host_not_live", `every host must be live; not live: ${offline.join(", ")}`);
  return rooms;
}

/**
 * The hosts a host invites must be free, and must not have turned this inviter down (declined or
 * let an invitation expire) within the cool-down. The cool-down is a refusal to come back later:
 * RESOURCE_EXHAUSTED with when (429 with Retry-After over REST).
 */
async function checkInvitees(
  deps: BattleDeps,
  em: EntityManager,
  inviterId: string,
  inviteeIds: readonly string[],
  now: Date,
) {
  const busy = [...(await deps.store.busyHosts(em, inviteeIds))];
  if (busy.length > 0)
    throw new PkError("host_busy", `already in a pending or running battle: ${busy.join(", ")}`);
  const cooldowns = await deps.store.inviteCooldowns(em, inviterId, inviteeIds, now);
  if (cooldowns.size === 0) return;
  const hostIds = [...cooldowns.keys()];
  const retryAfterMs = Math.max(...[...cooldowns.values()].map((until) => until.getTime())) - now.getTime();
  throw new PkError(
    "invite_cooldown",
    `${hostIds.join(", ")} turned down your last invitation; you may invite them again in ${Math.ceil(
      retryAfterMs / 1_000,
    )} s`,
    { retryAfterMs, details: { hostIds: hostIds.join(","), retryAfterMs: String(retryAfterMs) } },
  );
}

/** `inviterId` may not invite these hosts again for the cool-down. */
async function startCooldowns(
  deps: BattleDeps,
  em: EntityManager,
  inviterId: string,
  inviteeIds: readonly string[],
) {
  const now = new Date();
  const until = new Date(now.getTime() + deps.timings.reinviteCooldownSeconds * 1_000);
  await deps.store.startInviteCooldowns(em, inviterId, inviteeIds, until, now);
}

/**
 * Cancels the invitations a host has not answered: they joined a battle (and can answer no
 * other until it is over) or left their room. Their inviters are free at once, instead of
 * waiting for the expiry, and no cool-down starts: the host did not turn them down.
 */
async function cancelInvitationsOf(deps: BattleDeps, em: EntityManager, hostId: string, reason: string) {
  for (const battle of await deps.store.lockInvitations(em, hostId))
    await cancelPending(deps, em, battle.id, reason);
}

async function startNow(deps: BattleDeps, em: EntityManager, battle: BattleRow, rooms: Map<string, string>) {
  const startedAt = new Date();
  const endsAt = new Date(startedAt.getTime() + battle.durationSeconds * 1_000);
  await deps.store.start(em, battle.id, startedAt, endsAt, rooms);
  await cancelJob(em, jobKey.invite(battle.id));
  await scheduleJob(em, {
    task: pkJobs.windowEnd,
    payload: { battleId: battle.id },
    runAt: endsAt,
    key: jobKey.end(battle.id),
  });
}

export interface CreateBattleCommand {
  caller: Caller;
  request: BattleRequest;
  idempotencyKey: string;
}

/** A host's invitation (PENDING) or an admin's battle (ACTIVE at once). */
export async function createBattle(deps: BattleDeps, command: CreateBattleCommand): Promise<BattleView> {
  const settings = battleSettings(command.request, command.caller, deps.timings);
  const hash = createHash("sha256").update(JSON.stringify(settings)).digest();
  return inTransaction(deps, async (em) => {
    // First of all: a duplicate of a request still in flight waits here for the first's battle.
    await lockIdempotencyKey(em, `pk-battle:${command.caller.id}`, command.idempotencyKey);
    const existing = await deps.store.battleByKey(em, command.caller.id, command.idempotencyKey);
    if (existing !== null) {
      if (!existing.requestHash.equals(hash))
        throw new PkError("idempotency_conflict", "idempotency key reused with a different battle");
      return viewOf(deps, em, existing.id);
    }
    const hostIds = settings.sides.map((s) => s.hostId);
    const rooms = await requireLive(deps, em, hostIds);
    const now = new Date();
    if (!command.caller.admin)
      await checkInvitees(
        deps,
        em,
        command.caller.id,
        hostIds.filter((hostId) => hostId !== command.caller.id),
        now,
      );
    const id = uuidv7();
    await deps.store.insertBattle(
      em,
      {
        id,
        createdBy: command.caller.id,
        key: command.idempotencyKey,
        hash,
        createdAt: now,
        inviteExpiresAt: new Date(now.getTime() + deps.timings.inviteTtlSeconds * 1_000),
      },
      settings,
      (hostId) => command.caller.admin || hostId === command.caller.id,
    );
    const battle = (await deps.store.lockBattle(em, id))!;
    // Whoever is in from the start (the inviting host; every host of an admin's battle) joined.
    for (const hostId of command.caller.admin ? hostIds : [command.caller.id])
      await cancelInvitationsOf(deps, em, hostId, `${hostId} joined another battle`);
    if (command.caller.admin) {
      await startNow(deps, em, battle, rooms);
      const view = await viewOf(deps, em, id);
      await enqueueEvents(em, [battleEvents.started(view)]);
      return view;
    }
    await scheduleJob(em, {
      task: pkJobs.inviteExpiry,
      payload: { battleId: id },
      runAt: battle.inviteExpiresAt!,
      key: jobKey.invite(id),
    });
    const view = await viewOf(deps, em, id);
    await enqueueEvents(em, [battleEvents.invited(view)]);
    return view;
  });
}

/** An invited host accepts; the battle starts when the last one does. Idempotent. */
export async function acceptBattle(deps: BattleDeps, hostId: string, battleId: string): Promise<BattleView> {
  return inTransaction(deps, async (em) => {
    const battle = await lockOrThrow(deps, em, battleId);
    const hosts = await deps.store.hosts(em, battleId);
    const me = hosts.find((h) => h.hostId === hostId);
    if (me === undefined) throw new PkError("not_invited", `${hostId} is not invited to battle ${battleId}`);
    if (me.status === ParticipantStatus.ACCEPTED) return viewOf(deps, em, battleId);
    if (battle.state !== BattleState.PENDING || me.status !== ParticipantStatus.INVITED)
      throw new PkError("not_pending", `battle ${battleId} is no longer waiting for answers`);
    const rooms = await deps.store.liveRooms(em, [hostId]);
    if (!rooms.has(hostId)) throw new PkError("host_not_live", `${hostId} must be live to accept`);
    await deps.store.setHostStatus(em, battleId, hostId, ParticipantStatus.ACCEPTED);
    await cancelInvitationsOf(deps, em, hostId, `${hostId} joined another battle`);
    const everyoneIn = hosts.every((h) => h.hostId === hostId || h.status === ParticipantStatus.ACCEPTED);
    if (!everyoneIn) return viewOf(deps, em, battleId);
    await startNow(
      deps,
      em,
      battle,
      await requireLive(
        deps,
        em,
        hosts.map((h) => h.hostId),
      ),
    );
    const view = await viewOf(deps, em, battleId);
    await enqueueEvents(em, [battleEvents.started(view)]);
    return view;
  });
}

/** An invited host declines: the pending battle is cancelled. Idempotent. */
export async function declineBattle(deps: BattleDeps, hostId: string, battleId: string): Promise<BattleView> {
  return inTransaction(deps, async (em) => {
    const battle = await lockOrThrow(deps, em, battleId);
    const me = (await deps.store.hosts(em, battleId)).find((h) => h.hostId === hostId);
    if (me === undefined || me.hostId === battle.createdBy)
      throw new PkError("not_invited", `${hostId} is not invited to battle ${battleId}`);
    if (me.status === ParticipantStatus.DECLINED) return viewOf(deps, em, battleId);
    if (battle.state !== BattleState.PENDING)
      throw new PkError("not_pending", `battle ${battleId} is no longer waiting for answers`);
    await deps.store.setHostStatus(em, battleId, hostId, ParticipantStatus.DECLINED);
    await startCooldowns(deps, em, battle.createdBy, [hostId]);
    return cancelPending(deps, em, battleId, `${hostId} declined`);
  });
}

/** The inviting host or an admin cancels a pending battle. Idempotent. */
export async function cancelBattle(deps: BattleDeps, caller: Caller, battleId: string): Promise<BattleView> {
  return inTransaction(deps, async (em) => {
    const battle = await lockOrThrow(deps, em, battleId);
    if (!caller.admin && caller.id !== battle.createdBy)
      throw new PkError("not_creator", "only the inviting host or an admin may cancel a battle");
    if (battle.state === BattleState.CANCELLED) return viewOf(deps, em, battleId);
    if (battle.state !== BattleState.PENDING)
      throw new PkError("not_pending", `battle ${battleId} has started; it can no longer be cancelled`);
    return cancelPending(deps, em, battleId, `cancelled by ${caller.id}`);
  });
}

async function cancelPending(deps: BattleDeps, em: EntityManager, battleId: string, reason: string) {
  await deps.store.cancel(em, battleId, reason);
  await cancelJob(em, jobKey.invite(battleId));
  const view = await viewOf(deps, em, battleId);
  await enqueueEvents(em, [battleEvents.cancelled(view)]);
  return view;
}

// Timers.

/**
 * Invitation expiry: a battle still pending at its time is cancelled, and the hosts who let it
 * expire start a cool-down for its inviter, as a decline would.
 */
export async function expireInvitation(deps: BattleDeps, battleId: string): Promise<void> {
  await inTransaction(deps, async (em) => {
    const battle = await deps.store.lockBattle(em, battleId);
    if (battle?.state !== BattleState.PENDING || battle.inviteExpiresAt!.getTime() > Date.now()) return;
    const unanswered = (await deps.store.hosts(em, battleId)).filter(
      (h) => h.status === ParticipantStatus.INVITED,
    );
    await startCooldowns(
      deps,
      em,
      battle.createdBy,
      unanswered.map((h) => h.hostId),
    );
    await cancelPending(deps, em, battleId, "the invitation expired");
  });
}

/** The end of the current window: the battle waits for settlement. */
export async function endWindow(deps: BattleDeps, battleId: string): Promise<void> {
  await inTransaction(deps, async (em) => {
    const battle = await deps.store.lockBattle(em, battleId);
    if (battle === null || !running(battle.state)) return;
    if (battle.endsAt!.getTime() > Date.now()) {
      // The window moved (it cannot today, but a stale timer must not end a battle early).
      await scheduleWindowEnd(em, battleId, battle.endsAt!);
      return;
    }
    await timeUp(deps, em, battle, battle.endsAt!);
  });
}

async function scheduleWindowEnd(em: EntityManager, battleId: string, at: Date) {
  await scheduleJob(em, {
    task: pkJobs.windowEnd,
    payload: { battleId },
    runAt: at,
    key: jobKey.end(battleId),
  });
}

async function timeUp(
  deps: BattleDeps,
  em: EntityManager,
  battle: BattleRow,
  endsAt: Date,
  forfeit?: { side: Side; reason: string },
) {
  const now = new Date();
  await deps.store.timeUp(em, battle.id, endsAt, now, forfeit);
  await cancelJob(em, jobKey.end(battle.id));
  await scheduleJob(em, {
    task: pkJobs.settle,
    payload: { battleId: battle.id },
    runAt: new Date(now.getTime() + deps.timings.settleDelayMs),
    key: jobKey.settle(battle.id),
  });
  await enqueueEvents(em, [battleEvents.timeUp(await viewOf(deps, em, battle.id))]);
}

/**
 * Settlement: once every gift event published so far is scored (or the grace period ran out),
 * the battle is decided: a winner, a draw, or a bonus round on a tie.
 */
export async function settleBattle(deps: BattleDeps, battleId: string): Promise<void> {
  const unscored = await deps.unscoredGifts();
  await inTransaction(deps, async (em) => {
    const battle = await deps.store.lockBattle(em, battleId);
    if (battle?.state !== BattleState.ENDED) return;
    const now = new Date();
    const waited = now.getTime() - battle.endedAt!.getTime();
    if (unscored > 0 && waited < deps.timings.settleGraceMs) {
      await scheduleJob(em, {
        task: pkJobs.settle,
        payload: { battleId },
        runAt: new Date(now.getTime() + settleRecheckMs),
        key: jobKey.settle(battleId),
      });
      return;
    }
    const reason =
      unscored === 0
        ? "every gift published before the settlement check was scored"
        : `settled after the ${deps.timings.settleGraceMs} ms grace period with ${
            Number.isFinite(unscored) ? unscored : "an unknown number of"
          } gift events still unscored; any that counted are reported as late`;
    if (unscored > 0)
      deps.logger.warn({ battleId, unscored }, "battle settled at the end of its grace period");
    const decision = decide({
      scoreA: battle.scoreA,
      scoreB: battle.scoreB,
      tiePolicy: battle.tiePolicy,
      bonusRoundsPlayed: battle.bonusRoundsPlayed,
      bonusRoundsMax: battle.bonusRoundsMax,
      forfeitSide: battle.forfeitSide ?? undefined,
    });
    if (decision.kind === "bonus_round") {
      // Extra time runs on from the end of the last window, so a gift sent while the tie was
      // being found counts too.
      const endsAt = new Date(now.getTime() + battle.bonusRoundSeconds * 1_000);
      await deps.store.bonusRound(em, battleId, endsAt);
      await scheduleWindowEnd(em, battleId, endsAt);
      await enqueueEvents(em, [battleEvents.bonusRound(await viewOf(deps, em, battleId))]);
      return;
    }
    await deps.store.settle(em, battleId, decision.result, now, reason);
    const hosts = (await deps.store.hosts(em, battleId)).filter(
      (h) => h.status === ParticipantStatus.ACCEPTED || h.status === ParticipantStatus.FORFEITED,
    );
    const records = await deps.store.lockRecords(
      em,
      hosts.map((h) => h.hostId),
    );
    for (const host of hosts) {
      records.set(host.hostId, recordAfter(records.get(host.hostId)!, outcomeOf(host.side, decision.result)));
    }
    await deps.store.saveRecords(em, records, now);
    await enqueueEvents(em, [battleEvents.ended(await viewOf(deps, em, battleId))]);
  });
}

/**
 * A host's room ended (from gift's RoomEnded, inside the consumer's transaction). A pending
 * battle of theirs is cancelled, and so is every invitation they have not answered. In a running
 * battle the host forfeits: gifts to them committed from the room's end on stop counting, and
 * when it was their side's last host, the battle is over at that moment and the other side
 * wins. A battle already waiting for settlement is not changed: its time was up before.
 */
export async function roomEnded(
  deps: BattleDeps,
  em: EntityManager,
  room: { hostId: string; roomId: string; at: Date },
): Promise<void> {
  await cancelInvitationsOf(deps, em, room.hostId, `${room.hostId} ended their live room`);
  const battle = await deps.store.lockBusyBattle(em, room.hostId);
  if (battle === null) return;
  if (battle.state === BattleState.PENDING) {
    await cancelPending(deps, em, battle.id, `${room.hostId} ended their live room`);
    return;
  }
  if (!running(battle.state)) return;
  const hosts = await deps.store.hosts(em, battle.id);
  const me = hosts.find((h) => h.hostId === room.hostId);
  if (me?.status !== ParticipantStatus.ACCEPTED || (me.roomId !== null && me.roomId !== room.roomId)) return;
  const at = new Date(Math.max(room.at.getTime(), battle.startedAt!.getTime()));
  await deps.store.forfeitHost(em, battle.id, room.hostId, at);
  const teammates = hosts.filter(
    (h) => h.side === me.side && h.hostId !== me.hostId && h.status === ParticipantStatus.ACCEPTED,
  );
  if (teammates.length > 0) return;
  const sideName = me.side === Side.A ? "A" : "B";
  await timeUp(deps, em, battle, new Date(Math.min(at.getTime(), battle.endsAt!.getTime())), {
    side: me.side,
    reason: `side ${sideName} forfeited: its last host (${room.hostId}) ended their live room`,
  });
}

/** The battle timers a PK replica runs: invitations expire, windows end, battles settle. */
export function battleTimers(deps: BattleDeps) {
  return {
    crontab: settleSweepCrontab,
    tasks: {
      [pkJobs.inviteExpiry]: (payload: unknown) => expireInvitation(deps, battleOf(payload)),
      [pkJobs.windowEnd]: (payload: unknown) => endWindow(deps, battleOf(payload)),
      [pkJobs.settle]: (payload: unknown) => settleBattle(deps, battleOf(payload)),
      [pkJobs.settleSweep]: async () => {
        await settleOverdueBattles(deps);
      },
    },
  };
}

/** Settles the battles still ENDED past their grace period; returns how many it settled. */
export async function settleOverdueBattles(deps: BattleDeps): Promise<number> {
  const before = new Date(Date.now() - deps.timings.settleGraceMs);
  const overdue = await deps.store.endedBefore(deps.store.fork(), before, settleSweepMax);
  for (const battleId of overdue) {
    deps.logger.warn(
      { battleId },
      "settling a battle its own settlement job left ENDED past its grace period",
    );
    await settleBattle(deps, battleId);
  }
  return overdue.length;
}

function battleOf(payload: unknown): string {
  const battleId = (payload as { battleId?: unknown } | null)?.battleId;
  if (typeof battleId !== "string")
    throw new Error(`job payload without a battleId: ${JSON.stringify(payload)}`);
  return battleId;
}
