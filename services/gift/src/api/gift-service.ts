// GiftService handlers: validate, authorize, call a use case, shape the response.
import type { ServiceImpl } from "@connectrpc/connect";
import { isAdmin, requireIdentity, requireRole } from "@ovation/auth";
import {
  GiftDirection,
  type GiftService,
  LeaderboardPeriod,
} from "@ovation/proto/gen/ovation/gift/v1/gift_pb.ts";
import { decodePageCursor, encodePageCursor } from "@ovation/server";
import { type BoostDeps, purchaseBoost } from "../app/boosts.ts";
import {
  discoverEntryMessage,
  giftMessage,
  giftRecordFromEvent,
  giftRecordFromRow,
  roomMessage,
} from "../app/messages.ts";
import type { GiftRepository } from "../app/ports.ts";
import { type SendGiftDeps, sendGift } from "../app/send-gift.ts";
import { boostLimits } from "../domain/boosts.ts";
import { GiftError, giftLimits, periodKeys } from "../domain/rules.ts";
import { requestSchemas as schemas, validate } from "./validate.ts";

export interface GiftServiceDeps extends SendGiftDeps {
  store: GiftRepository;
  boosts: BoostDeps;
}

export function giftServiceImpl(deps: GiftServiceDeps): ServiceImpl<typeof GiftService> {
  const { store, catalog, rooms } = deps;
  return {
    listGifts() {
      return { gifts: catalog.active().map(giftMessage) };
    },

    async createGift(request, ctx) {
      requireRole(ctx, "admin");
      const { gift } = validate(schemas.createGift, request);
      const created = await store.createGift(gift);
      await catalog.refresh();
      return { gift: giftMessage(created) };
    },

    async updateGift(request, ctx) {
      requireRole(ctx, "admin");
      const valid = validate(schemas.updateGift, request);
      const { id: _ignored, ...changes } = valid.gift;
      const updated = await store.updateGift(valid.giftId, (gift) => Object.assign(gift, changes));
      await catalog.refresh();
      return { gift: giftMessage(updated) };
    },

    async retireGift(request, ctx) {
      requireRole(ctx, "admin");
      const { giftId } = validate(schemas.retireGift, request);
      const retired = await store.updateGift(giftId, (gift) => {
        gift.active = false;
      });
      await catalog.refresh();
      return { gift: giftMessage(retired) };
    },

    async startLive(request, ctx) {
      const host = requireRole(ctx, "host");
      const { title } = validate(schemas.startLive, request);
      const room = await store.startLive(host.subject, title);
      rooms.note(room);
      return { room: roomMessage(room) };
    },

    async endLive(request, ctx) {
      const caller = requireIdentity(ctx);
      const { roomId } = validate(schemas.room, request);
      const room = await store.endLive(roomId, caller.subject, isAdmin(caller));
      rooms.note(room);
      return { room: roomMessage(room) };
    },

    async getRoom(request) {
      const { roomId } = validate(schemas.room, request);
      const room = await store.room(roomId);
      if (room === null) throw new GiftError("room_not_found", `no room ${roomId}`);
      return { room: roomMessage(room) };
    },

    async sendGift(request, ctx) {
      const sender = requireIdentity(ctx);
      const valid = validate(schemas.sendGift, request);
      const result = await sendGift(deps, {
        ...valid,
        senderId: sender.subject,
        // The sender's own token goes to the wallet: their consent to be debited.
        consentToken: sender.token,
        vipLevel: sender.vipLevel,
      });
      return { gift: giftRecordFromEvent(result.gift), balance: result.balance };
    },

    async listGiftHistory(request, ctx) {
      const caller = requireIdentity(ctx);
      const valid = validate(schemas.history, request);
      const size = valid.pageSize || giftLimits.pageSizeDefault;
      const direction = valid.direction === GiftDirection.RECEIVED ? "received" : "sent";
      const rows = await store.history(
        caller.subject,
        direction,
        size + 1,
        decodePageCursor(valid.pageToken),
      );
      const page = rows.slice(0, size);
      return {
        gifts: page.map(giftRecordFromRow),
        nextPageToken:
          rows.length > size
            ? encodePageCursor({
                at: new Date(page[page.length - 1]!.sent_at),
                id: page[page.length - 1]!.id,
              })
            : "",
      };
    },

    async getRoomLeaderboard(request) {
      const valid = validate(schemas.roomLeaderboard, request);
      const rows = await store.roomLeaderboard(valid.roomId, valid.limit || giftLimits.leaderboardDefault);
      return {
        entries: rows.map((row, i) => ({ rank: i + 1, userId: row.user_id, amount: BigInt(row.amount) })),
      };
    },

    async getHostLeaderboard(request) {
      const valid = validate(schemas.hostLeaderboard, request);
      const keys = periodKeys(new Date());
      const period =
        valid.period === LeaderboardPeriod.WEEK
          ? keys.week
          : valid.period === LeaderboardPeriod.ALL
            ? keys.all
            : keys.day;
      const rows = await store.hostLeaderboard(period, valid.limit || giftLimits.leaderboardDefault);
      return {
        entries: rows.map((row, i) => ({ rank: i + 1, userId: row.user_id, amount: BigInt(row.amount) })),
      };
    },

    async purchaseBoost(request, ctx) {
      const buyer = requireIdentity(ctx);
      const valid = validate(schemas.purchaseBoost, request);
      // The buyer's own token goes to the wallet: their consent to be debited.
      return purchaseBoost(deps.boosts, { ...valid, buyerId: buyer.subject, consentToken: buyer.token });
    },

    async discover(request) {
      const { pageSize } = validate(schemas.discover, request);
      const rows = await deps.boosts.discovery.discover(pageSize || boostLimits.discoverPageDefault);
      return { entries: rows.map(discoverEntryMessage) };
    },
  };
}
