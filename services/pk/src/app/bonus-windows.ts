// Admin bonus windows: gifts committed inside one score × its multiplier (score_gifts reads
// them by commit time, so a window set while a gift is in flight applies as it should).
import { createHash } from "node:crypto";
import { lockIdempotencyKey, retryRaces } from "@ovation/db";
import { v4 as uuidv4 } from "uuid";
import { PkError, pkLimits } from "../domain/battle.ts";
import type { BonusWindowRepository, BonusWindowRow } from "./ports.ts";

export interface BonusWindowCommand {
  adminId: string;
  multiplier: number;
  /** When the window starts; null when the request left it out, meaning "now". */
  startsAt: Date | null;
  durationSeconds: number;
  battleId: string | null;
  giftId: string | null;
  idempotencyKey: string;
}

/**
 * The fingerprint of a request as the admin sent it. A start left out stays "now" here, not the
 * instant we computed, so a retry of the same request matches the first however much later it
 * comes. A given start hashes as it always did ([multiplier, start, end, battle, gift]), so keys
 * recorded before this change still match their retries.
 */
function requestHash(command: BonusWindowCommand): Buffer {
  const { multiplier, startsAt, durationSeconds, battleId, giftId } = command;
  const fingerprint =
    startsAt === null
      ? [multiplier, "now", durationSeconds, battleId, giftId]
      : [multiplier, startsAt, new Date(startsAt.getTime() + durationSeconds * 1_000), battleId, giftId];
  return createHash("sha256").update(JSON.stringify(fingerprint)).digest();
}

export async function createBonusWindow(
  store: BonusWindowRepository,
  command: BonusWindowCommand,
): Promise<BonusWindowRow> {
  const hash = requestHash(command);
  return retryRaces(() =>
    store.fork().transactional(async (em) => {
      // First of all: a duplicate of a request still in flight waits here for the first to
      // commit, then finds its window below, instead of racing it to the unique key and
      // answering "already exists".
      await lockIdempotencyKey(em, `pk-bonus-window:${command.adminId}`, command.idempotencyKey);
      const existing = await store.windowByKey(em, command.adminId, command.idempotencyKey);
      if (existing !== null) {
        if (!existing.requestHash.equals(hash))
          throw new PkError("idempotency_conflict", "idempotency key reused with a different window");
        return existing;
      }
      if (command.battleId !== null && (await store.view(em, command.battleId)) === null)
        throw new PkError("battle_not_found", `no battle ${command.battleId}`);
      const startsAt = command.startsAt ?? new Date();
      const window: BonusWindowRow = {
        id: uuidv4(),
        multiplier: command.multiplier,
        startsAt,
        endsAt: new Date(startsAt.getTime() + command.durationSeconds * 1_000),
        battleId: command.battleId,
        giftId: command.giftId,
        createdBy: command.adminId,
        requestHash: hash,
      };
      await store.insertWindow(em, { ...window, key: command.idempotencyKey });
      return window;
    }),
  );
}

export async function openBonusWindows(store: BonusWindowRepository, now: Date): Promise<BonusWindowRow[]> {
  return store.openWindows(store.fork(), now, pkLimits.windowsListed);
}
