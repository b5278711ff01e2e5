// Admin bonus windows: gifts committed inside one score × its multiplier (score_gifts reads
// them by commit time, so a window set while a gift is in flight applies as it should).
import { createHash } from "node:crypto";
import { retryRaces } from "@ovation/db";
import { v4 as uuidv4 } from "uuid";
import { PkError, pkLimits } from "../domain/battle.ts";
import type { BonusWindowRepository, BonusWindowRow } from "./ports.ts";

export interface BonusWindowCommand {
  adminId: string;
  multiplier: number;
  startsAt: Date;
  durationSeconds: number;
  battleId: string | null;
  giftId: string | null;
  idempotencyKey: string;
}

export async function createBonusWindow(
  store: BonusWindowRepository,
  command: BonusWindowCommand,
): Promise<BonusWindowRow> {
  const endsAt = new Date(command.startsAt.getTime() + command.durationSeconds * 1_000);
  const hash = createHash("sha256")
    .update(JSON.stringify([command.multiplier, command.startsAt, endsAt, command.battleId, command.giftId]))
    .digest();
  return retryRaces(() =>
    store.fork().transactional(async (em) => {
      const existing = await store.windowByKey(em, command.adminId, command.idempotencyKey);
      if (existing !== null) {
        if (!existing.requestHash.equals(hash))
          throw new PkError("idempotency_conflict", "idempotency key reused with a different window");
        return existing;
      }
      if (command.battleId !== null && (await store.view(em, command.battleId)) === null)
        throw new PkError("battle_not_found", `no battle ${command.battleId}`);
      const window: BonusWindowRow = {
        id: uuidv4(),
        multiplier: command.multiplier,
        startsAt: command.startsAt,
        endsAt,
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
