// Proves who hears about which wallet event and in what words: every host of a boost but a
// self-boosting buyer, purchases, promotion credits and refunds, and nothing for spending or
// gift income; ids are the same for the same event and fit a NOTIFY payload at any size.
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { MoneySchema } from "@ovation/proto/gen/ovation/type/v1/money_pb.ts";
import {
  BoostPurchasedSchema,
  BoostTargetType,
  CreditEventKind,
  CreditEventSchema,
} from "@ovation/proto/gen/ovation/wallet/v1/events_pb.ts";
import { TransferKind } from "@ovation/proto/gen/ovation/wallet/v1/wallet_pb.ts";
import { describe, expect, it } from "vitest";
import {
  boostNotifications,
  clip,
  creditNotifications,
  notificationJson,
  notificationLimits,
  notifyPayloadMaxBytes,
} from "./notifications.ts";

const received = new Date("2026-11-22T10:00:00.000Z");
const started = new Date("2026-11-22T09:59:59.123Z");

const boost = (overrides: MessageInitShape<typeof BoostPurchasedSchema> = {}) =>
  create(BoostPurchasedSchema, {
    boostId: "6f1c2f7e-2a43-4a55-9d3c-0b8f0b6e4a10",
    buyerId: "alice",
    targetType: BoostTargetType.HOST,
    targetId: "hana",
    hostIds: ["hana"],
    money: create(MoneySchema, { asset: "COIN", amount: 500n }),
    durationHours: 24,
    startTime: timestampFromDate(started),
    expireTime: timestampFromDate(new Date(started.getTime() + 24 * 3600_000)),
    ...overrides,
  });

const credit = (kind: CreditEventKind, reason: TransferKind, amount = 500n) =>
  create(CreditEventSchema, {
    kind,
    userId: "vic",
    money: create(MoneySchema, { asset: "COIN", amount }),
    reason,
    transferId: "0b6f8a7e-8f0e-4d4b-a0a5-3f1f2f9d1c11",
    reference: "order-7",
    time: timestampFromDate(started),
  });

describe("boostNotifications", () => {
  it("tells the host who boosted what, for how long and for how much", () => {
    const [notification, ...rest] = boostNotifications(boost(), received);
    expect(rest).toEqual([]);
    expect(notification).toMatchObject({
      userId: "hana",
      type: "boost.received",
      text: "Your profile was boosted by alice for 24 hours (500 COIN)",
      createdAt: started,
      data: {
        boostId: "6f1c2f7e-2a43-4a55-9d3c-0b8f0b6e4a10",
        buyerId: "alice",
        targetType: "BOOST_TARGET_TYPE_HOST",
        targetId: "hana",
        asset: "COIN",
        amount: "500",
        durationHours: 24,
        startTime: started.toISOString(),
      },
    });
  });

  it("names rooms and PK sides, and one hour in the singular", () => {
    expect(boostNotifications(boost({ targetType: BoostTargetType.ROOM }), received)[0]!.text).toBe(
      "Your live room was boosted by alice for 24 hours (500 COIN)",
    );
    const side = boost({ targetType: BoostTargetType.PK_SIDE, durationHours: 1 });
    expect(boostNotifications(side, received)[0]!.text).toBe(
      "Your PK side was boosted by alice for 1 hour (500 COIN)",
    );
  });

  it("notifies every host of a side once, and never the buyer boosting themselves", () => {
    const side = boost({
      targetType: BoostTargetType.PK_SIDE,
      hostIds: ["hana", "alice", "hugo", "hana", ""],
    });
    const notifications = boostNotifications(side, received);
    expect(notifications.map((n) => n.userId)).toEqual(["hana", "hugo"]);
    expect(new Set(notifications.map((n) => n.id)).size).toBe(2);
    expect(boostNotifications(boost({ buyerId: "hana" }), received)).toEqual([]);
  });

  it("gives the same ids for the same boost, whatever the event id or the time it arrives", () => {
    const first = boostNotifications(boost(), received);
    const again = boostNotifications(boost(), new Date());
    expect(again).toEqual(first);
    expect(first[0]!.id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    const other = boostNotifications(boost({ boostId: "7f1c2f7e-2a43-4a55-9d3c-0b8f0b6e4a10" }), received);
    expect(other[0]!.id).not.toBe(first[0]!.id);
  });

  it("dates an event without a plausible start by its arrival", () => {
    expect(boostNotifications(boost({ startTime: undefined }), received)[0]!.createdAt).toEqual(received);
    const ancient = boost({ startTime: timestampFromDate(new Date("1970-01-02T00:00:00Z")) });
    expect(boostNotifications(ancient, received)[0]!.createdAt).toEqual(received);
  });
});

describe("creditNotifications", () => {
  it("announces purchases, mints, promotion credits and refunds", () => {
    const cases = [
      [
        CreditEventKind.PURCHASED,
        TransferKind.PURCHASE,
        "credit.purchased",
        "500 COIN landed in your wallet",
      ],
      [CreditEventKind.PURCHASED, TransferKind.MINT, "credit.purchased", "500 COIN landed in your wallet"],
      [
        CreditEventKind.EARNED,
        TransferKind.PROMOTION,
        "credit.earned",
        "500 COIN promotion credit landed in your wallet",
      ],
      [CreditEventKind.EARNED, TransferKind.REFUND, "credit.earned", "500 COIN refunded to your wallet"],
    ] as const;
    for (const [kind, reason, type, text] of cases) {
      const [notification, ...rest] = creditNotifications(credit(kind, reason), received);
      expect(rest).toEqual([]);
      expect(notification).toMatchObject({ userId: "vic", type, text, createdAt: started });
    }
    expect(
      creditNotifications(credit(CreditEventKind.EARNED, TransferKind.REFUND), received)[0]!.data,
    ).toEqual({
      transferId: "0b6f8a7e-8f0e-4d4b-a0a5-3f1f2f9d1c11",
      kind: "CREDIT_EVENT_KIND_EARNED",
      reason: "TRANSFER_KIND_REFUND",
      asset: "COIN",
      amount: "500",
      reference: "order-7",
      time: started.toISOString(),
    });
  });

  it("stays silent about spending, gift income and empty or unknown events", () => {
    const silent = [
      credit(CreditEventKind.SPENT, TransferKind.SPEND),
      credit(CreditEventKind.SPENT, TransferKind.GIFT),
      credit(CreditEventKind.EARNED, TransferKind.EARN),
      credit(CreditEventKind.UNSPECIFIED, TransferKind.PURCHASE),
      credit(CreditEventKind.PURCHASED, TransferKind.PURCHASE, 0n),
      create(CreditEventSchema, { ...credit(CreditEventKind.PURCHASED, TransferKind.PURCHASE), userId: "" }),
    ];
    for (const event of silent) expect(creditNotifications(event, received)).toEqual([]);
  });

  it("keeps a purchase and a refund of one transfer apart", () => {
    const purchased = creditNotifications(credit(CreditEventKind.PURCHASED, TransferKind.PURCHASE), received);
    const refunded = creditNotifications(credit(CreditEventKind.EARNED, TransferKind.REFUND), received);
    expect(purchased[0]!.id).not.toBe(refunded[0]!.id);
  });
});

describe("bounds", () => {
  it("fits a NOTIFY payload even when every id is as long as an event can make it", () => {
    // Control characters are the worst case: JSON writes each of their bytes as six.
    for (const huge of ["名".repeat(10_000), "\u0001".repeat(10_000)]) {
      const event = boost({
        boostId: huge,
        buyerId: huge,
        targetId: huge,
        hostIds: [huge.slice(0, notificationLimits.userIdMaxBytes / 4)],
        money: create(MoneySchema, { asset: huge, amount: 9_223_372_036_854_775_807n }),
        durationHours: 4_294_967_295,
      });
      const [notification] = boostNotifications(event, received);
      const payload = JSON.stringify({ ...notificationJson(notification!), userId: notification!.userId });
      expect(Buffer.byteLength(payload)).toBeLessThan(notifyPayloadMaxBytes);
      expect(Buffer.byteLength(notification!.text)).toBeLessThan(notificationLimits.textMaxBytes);
      expect(Buffer.byteLength(JSON.stringify(notification!.data))).toBeLessThan(
        notificationLimits.dataMaxBytes,
      );
    }
    const tooLong = boost({ hostIds: ["x".repeat(notificationLimits.userIdMaxBytes + 1)] });
    expect(boostNotifications(tooLong, received)).toEqual([]);
  });

  it("clips at a character boundary and marks the cut", () => {
    expect(clip("alice", 5)).toBe("alice");
    expect(clip("abcdef", 5)).toBe("ab…");
    expect(clip("名名名", 8)).toBe("名…");
    expect(Buffer.byteLength(clip("名".repeat(100), 64))).toBeLessThanOrEqual(64);
  });
});
