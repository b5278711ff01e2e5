// PkService handlers: validate, authorize, call a use case, shape the response.
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import { isAdmin, requireIdentity, requireRole } from "@ovation/auth";
import type { PkService } from "@ovation/proto/gen/ovation/pk/v1/pk_pb.ts";
import { decodePageCursor, encodePageCursor } from "@ovation/server";
import { acceptBattle, type BattleDeps, cancelBattle, createBattle, declineBattle } from "../app/battles.ts";
import { createBonusWindow, openBonusWindows } from "../app/bonus-windows.ts";
import { battleMessage, bonusWindowMessage } from "../app/messages.ts";
import type { BonusWindowRepository } from "../app/ports.ts";
import { PkError, pkLimits } from "../domain/battle.ts";
import { requestSchemas as schemas, validate } from "./validate.ts";

/** A bonus window may start this much in the past (clock skew between admin tools and us). */
const windowStartSkewMs = 5_000;

export function pkServiceImpl(
  deps: BattleDeps,
  windows: BonusWindowRepository,
): ServiceImpl<typeof PkService> {
  const { store } = deps;
  return {
    async createBattle(request, ctx) {
      const caller = requireRole(ctx, "host", "admin");
      const valid = validate(schemas.createBattle, request);
      const view = await createBattle(deps, {
        caller: { id: caller.subject, admin: isAdmin(caller) },
        request: valid,
        idempotencyKey: valid.idempotencyKey,
      });
      return { battle: battleMessage(view) };
    },

    async acceptBattle(request, ctx) {
      const host = requireIdentity(ctx);
      const { battleId } = validate(schemas.battle, request);
      return { battle: battleMessage(await acceptBattle(deps, host.subject, battleId)) };
    },

    async declineBattle(request, ctx) {
      const host = requireIdentity(ctx);
      const { battleId } = validate(schemas.battle, request);
      return { battle: battleMessage(await declineBattle(deps, host.subject, battleId)) };
    },

    async cancelBattle(request, ctx) {
      const caller = requireIdentity(ctx);
      const { battleId } = validate(schemas.battle, request);
      const view = await cancelBattle(deps, { id: caller.subject, admin: isAdmin(caller) }, battleId);
      return { battle: battleMessage(view) };
    },

    async getBattle(request, ctx) {
      requireIdentity(ctx);
      const { battleId } = validate(schemas.battle, request);
      const view = await store.view(store.fork(), battleId);
      if (view === null) throw new PkError("battle_not_found", `no battle ${battleId}`);
      return { battle: battleMessage(view) };
    },

    async listBattles(request, ctx) {
      const caller = requireIdentity(ctx);
      const valid = validate(schemas.listBattles, request);
      const hostId = valid.hostId || caller.subject;
      const size = valid.pageSize || pkLimits.pageSizeDefault;
      const em = store.fork();
      const views = await store.history(em, hostId, size + 1, decodePageCursor(valid.pageToken));
      const page = views.slice(0, size);
      const record = await store.record(em, hostId);
      return {
        battles: page.map((view) => battleMessage(view)),
        record: { hostId, ...record },
        nextPageToken:
          views.length > size
            ? encodePageCursor({
                at: page[page.length - 1]!.battle.createdAt,
                id: page[page.length - 1]!.battle.id,
              })
            : "",
      };
    },

    async createBonusWindow(request, ctx) {
      const admin = requireRole(ctx, "admin");
      const valid = validate(schemas.createBonusWindow, request);
      // An omitted start stays null down to the use case: "now" is taken when the window is
      // stored, so a retry of the same request is the same request.
      const startsAt = request.startTime === undefined ? null : timestampDate(request.startTime);
      if (startsAt !== null && startsAt.getTime() < Date.now() - windowStartSkewMs)
        throw new ConnectError(
          "invalid request: start_time: must not be in the past (gifts already scored are not rescored)",
          Code.InvalidArgument,
        );
      const window = await createBonusWindow(windows, {
        adminId: admin.subject,
        multiplier: valid.multiplier,
        startsAt,
        durationSeconds: valid.durationSeconds,
        battleId: valid.battleId || null,
        giftId: valid.giftId || null,
        idempotencyKey: valid.idempotencyKey,
      });
      return { window: bonusWindowMessage(window) };
    },

    async listBonusWindows(_request, ctx) {
      requireRole(ctx, "admin");
      return { windows: (await openBonusWindows(windows, new Date())).map(bonusWindowMessage) };
    },
  };
}
