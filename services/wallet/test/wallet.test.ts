// Proves the wallet's guarantees through its gRPC API against the real Postgres and NATS:
// no overdraft under 200 concurrent debits, idempotent retries, deduct-and-publish atomicity,
// exactly-once publishing across a relay restart, holds, the per-caller money policy, host
// credit from what the ledger debited, validation, and that callers are told apart by the key
// that signed their token: a leaked service key cannot act as a user, an admin or another
// service.

import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { ConnectError } from "@connectrpc/connect";
import { readSigningKey, type SigningKey } from "@ovation/auth";
import { nativePool } from "@ovation/db";
import { DlqAdmin, EventBus, enqueueEvents, eventOf, OutboxRelay } from "@ovation/events";
import { GiftSentSchema } from "@ovation/proto/gen/ovation/gift/v1/events_pb.ts";
import {
  BoostPurchasedSchema,
  CreditEventKind,
  TransferCommittedSchema,
} from "@ovation/proto/gen/ovation/wallet/v1/events_pb.ts";
import { HoldStatus, TransferKind, WalletService } from "@ovation/proto/gen/ovation/wallet/v1/wallet_pb.ts";
import { codeOf, waitFor } from "@ovation/testkit";
import { seedFundedUsers } from "@ovation/testkit/bench";
import { type JWTPayload, SignJWT } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { auditLedger } from "../src/app/audit.ts";
import { startWalletHarness, type WalletHarness } from "./helpers.ts";

let h: WalletHarness;
let admin: ReturnType<typeof walletClient>;
let gift: ReturnType<typeof walletClient>;
let shop: ReturnType<typeof walletClient>;
const walletClient = (token?: string) => h.client(WalletService, token);

beforeAll(async () => {
  h = await startWalletHarness();
  await h.prepareConsent([
    "a",
    "booster",
    "buyer",
    "cred",
    "fan",
    "holder",
    "hot",
    "retry",
    "sender",
    "twin",
    "viewer",
    "liar",
  ]);
  admin = walletClient(await h.env.token("root", ["admin"]));
  gift = walletClient(await h.env.serviceToken("gift"));
  shop = walletClient(await h.env.serviceToken("order"));
});
afterAll(() => h?.close());

const coin = (amount: bigint) => ({ asset: "COIN", amount });
const key = () => crypto.randomUUID();
const consent = (user: string) => h.consent(user);
const balanceOf = async (userId: string, asset = "COIN") =>
  (await admin.getBalances({ userId })).balances.find((b) => b.asset === asset)?.amount ?? 0n;

async function streamCount(stream: string, subject: string): Promise<number> {
  const { bus } = h.wallet;
  const info = await bus.jsm.streams.info(bus.names.stream(stream), {
    subjects_filter: bus.names.subject(subject),
  });
  return Number(info.state.subjects?.[bus.names.subject(subject)] ?? 0);
}

const outboxEmpty = async () =>
  (await h.wallet.orm.em.fork().execute("select 1 from outbox where attempts = 0")).length === 0;

/** A gift debit as the gift service sends it: viewer → gifts-in-transit, carrying GiftSent. */
function giftTransfer(sender: string, debited: bigint, claimed: bigint, hostId: string) {
  const sendId = crypto.randomUUID();
  const event = create(GiftSentSchema, {
    sendId,
    senderId: sender,
    hostId,
    giftId: "rose",
    count: 1,
    total: claimed,
  });
  return {
    debitOwner: `user:${sender}`,
    consentToken: consent(sender),
    creditOwner: "system:gifts-in-transit",
    money: coin(debited),
    kind: TransferKind.GIFT,
    reference: sendId,
    idempotencyKey: key(),
    event: {
      eventId: sendId,
      subject: "gift.gift.sent",
      type: GiftSentSchema.typeName,
      payload: toBinary(GiftSentSchema, event),
    },
  };
}

describe("ledger", () => {
  it("200 concurrent debits of one account never overdraw it, and the audit holds", async () => {
    await admin.mint({ userId: "hot", money: coin(100n), idempotencyKey: key() });
    const results = await Promise.all(
      Array.from({ length: 200 }, () =>
        codeOf(
          gift.transfer({
            debitOwner: "user:hot",
            consentToken: consent("hot"),
            creditOwner: "system:gifts-in-transit",
            money: coin(1n),
            kind: TransferKind.GIFT,
            idempotencyKey: key(),
          }),
        ),
      ),
    );
    expect(results.filter((r) => r === "ok")).toHaveLength(100);
    expect(results.filter((r) => r === "FailedPrecondition")).toHaveLength(100);
    expect(await balanceOf("hot")).toBe(0n);
    const audit = await auditLedger(h.wallet.store);
    expect(audit.lines.join("\n")).toContain("ok   every balance matches its journal");
    expect(audit.ok).toBe(true);
  });

  it("a retried transfer moves money once; the same key with another request is refused", async () => {
    await admin.mint({ userId: "retry", money: coin(50n), idempotencyKey: key() });
    const request = {
      debitOwner: "user:retry",
      consentToken: consent("retry"),
      creditOwner: "system:gifts-in-transit",
      money: coin(20n),
      kind: TransferKind.GIFT,
      idempotencyKey: key(),
    };
    const first = await gift.transfer(request);
    const again = await gift.transfer(request);
    expect(again.replayed).toBe(true);
    expect(again.transfer?.id).toBe(first.transfer?.id);
    expect(again.debitBalance).toBe(30n);
    expect(await balanceOf("retry")).toBe(30n);
    expect(await codeOf(gift.transfer({ ...request, money: coin(21n) }))).toBe("AlreadyExists");
    // Ten concurrent copies of a new request (a client retrying after timeouts) debit once.
    const burst = { ...request, idempotencyKey: key() };
    const copies = await Promise.all(Array.from({ length: 10 }, () => gift.transfer(burst)));
    expect(new Set(copies.map((c) => c.transfer?.id)).size).toBe(1);
    expect(await balanceOf("retry")).toBe(10n);
  });

  it("deducts and publishes the caller's event atomically; a failed debit publishes nothing", async () => {
    await admin.mint({ userId: "sender", money: coin(10n), idempotencyKey: key() });
    const event = (eventId: string) => ({
      eventId,
      subject: "gift.gift.sent",
      type: "ovation.type.v1.Money",
      payload: new Uint8Array([8, 1]),
    });
    const before = await streamCount("GIFT", "gift.gift.sent");
    const transfer = (amount: bigint) =>
      gift.transfer({
        debitOwner: "user:sender",
        consentToken: consent("sender"),
        creditOwner: "system:gifts-in-transit",
        money: coin(amount),
        kind: TransferKind.GIFT,
        idempotencyKey: key(),
        event: event(crypto.randomUUID()),
      });
    expect(await codeOf(transfer(11n))).toBe("FailedPrecondition");
    await transfer(10n);
    // Once the relay has drained the outbox, everything there was to publish is in the stream.
    await waitFor(outboxEmpty, { what: "the relay to drain the outbox" });
    expect(await streamCount("GIFT", "gift.gift.sent")).toBe(before + 1);
    expect(await balanceOf("sender")).toBe(0n);
  });

  it("a crash between commit and publish still publishes exactly once when the relay restarts", async () => {
    await h.wallet.relay.stop();
    const before = await streamCount("WALLET", "wallet.transfer.credit.purchased");
    const minted = await admin.mint({ userId: "crash", money: coin(5n), idempotencyKey: key() });
    const pending = await h.wallet.orm.em.fork().execute("select event_id from outbox");
    expect(pending.length).toBeGreaterThanOrEqual(1);
    expect(await streamCount("WALLET", "wallet.transfer.credit.purchased")).toBe(before);

    const restarted = new OutboxRelay({
      pool: await nativePool(h.wallet.orm),
      databaseUrl: h.env.databaseUrl,
      schema: "wallet",
      bus: h.wallet.bus,
      logger: h.wallet.logger,
    });
    await restarted.start();
    h.wallet.relay = restarted;
    await waitFor(
      async () => (await streamCount("WALLET", "wallet.transfer.credit.purchased")) === before + 1,
    );
    const stored = await h.wallet.bus.jsm.streams.getMessage(h.wallet.bus.names.stream("WALLET"), {
      last_by_subj: h.wallet.bus.names.subject("wallet.transfer.credit.purchased"),
    });
    const event = fromBinary(TransferCommittedSchema, stored!.data);
    expect(event.transfer?.id).toBe(minted.transfer?.id);
    expect(event.transfer?.kind).toBe(TransferKind.MINT);
  });

  it("pages through history newest first", async () => {
    for (let i = 1n; i <= 5n; i++)
      await admin.mint({ userId: "pager", money: coin(i), idempotencyKey: key() });
    const user = walletClient(await h.env.token("pager", ["user"]));
    const first = await user.listTransfers({ pageSize: 3 });
    expect(first.transfers.map((t) => t.money?.amount)).toEqual([5n, 4n, 3n]);
    const second = await user.listTransfers({ pageSize: 3, pageToken: first.nextPageToken });
    expect(second.transfers.map((t) => t.money?.amount)).toEqual([2n, 1n]);
    expect(second.nextPageToken).toBe("");
    // Tokens nobody issued: a UUID-shaped run of dashes, padding variants, random bytes.
    for (const pageToken of [
      Buffer.from("-".repeat(36)).toString("base64url"),
      `${first.nextPageToken}=`,
      Buffer.from("not a cursor").toString("base64url"),
      "%%%",
    ]) {
      expect(await codeOf(user.listTransfers({ pageSize: 3, pageToken }))).toBe("InvalidArgument");
    }
  });

  it("users funded by the bench kit's SQL seed hold their coins, can spend them, and the audit holds", async () => {
    // The benchmarks of every service seed their senders this way (packages/testkit/src/seed.ts),
    // written against the wallet's tables only: this proves the seed still matches them.
    const em = h.wallet.orm.em.fork();
    await seedFundedUsers({ query: (sql) => em.execute(sql) }, "seeded", 3, 500n);
    expect(await balanceOf("seeded2")).toBe(500n);
    await h.prepareConsent(["seeded2"]);
    await gift.transfer({
      debitOwner: "user:seeded2",
      creditOwner: "system:gifts-in-transit",
      money: coin(200n),
      kind: TransferKind.GIFT,
      idempotencyKey: key(),
      consentToken: consent("seeded2"),
    });
    expect(await balanceOf("seeded2")).toBe(300n);
    const audit = await auditLedger(h.wallet.store);
    expect(audit.lines.join("\n")).toContain("ok   every balance matches its journal");
    expect(audit.ok).toBe(true);
  });
});

describe("host credit", () => {
  it("credits the host what the ledger debited, whatever total the GiftSent claims", async () => {
    await admin.mint({ userId: "liar", money: coin(100n), idempotencyKey: key() });
    // The event claims 1,000 coins; the ledger took 10.
    await gift.transfer(giftTransfer("liar", 10n, 1_000n, "honest-host"));
    await waitFor(async () => (await balanceOf("honest-host")) > 0n, { what: "the host credit" });
    expect(await balanceOf("honest-host")).toBe(7n);
    expect(await balanceOf("liar")).toBe(90n);
    await waitFor(outboxEmpty);
    expect((await auditLedger(h.wallet.store)).ok).toBe(true);
  });

  it("dead-letters a GiftSent that no debit carried and credits nobody", async () => {
    const sendId = crypto.randomUUID();
    const forged = create(GiftSentSchema, {
      sendId,
      senderId: "ghost",
      hostId: "greedy-host",
      total: 5_000n,
    });
    // Published straight to the stream, as a forger with NATS access could.
    await h.wallet.orm.em
      .fork()
      .transactional((em) => enqueueEvents(em, [eventOf(GiftSentSchema, forged, "gift.gift.sent", sendId)]));
    const admin = new DlqAdmin(h.wallet.bus);
    const entry = await waitFor(
      async () => (await admin.list(100, "")).entries.find((e) => e.eventId === sendId),
      { timeoutMs: 15_000, what: "the dead letter" },
    );
    expect(entry.reason).toContain("no gift debit carried event");
    expect(await balanceOf("greedy-host")).toBe(0n);
    expect((await auditLedger(h.wallet.store)).ok).toBe(true);
  });
});

describe("holds", () => {
  /** Mints `funds` to `user`; returns a reserve of `amount` by that user, with a key of its own. */
  async function fundedReserve(user: string, funds: bigint, amount: bigint) {
    await admin.mint({ userId: user, money: coin(funds), idempotencyKey: key() });
    return { owner: `user:${user}`, consentToken: consent(user), money: coin(amount), idempotencyKey: key() };
  }

  it("reserves, captures in part and returns the rest; a second capture changes nothing", async () => {
    const reserve = await fundedReserve("buyer", 100n, 60n);
    const { hold } = await shop.reserveHold(reserve);
    expect(await balanceOf("buyer")).toBe(40n);
    // A retry of the reserve finds the same hold and holds nothing more.
    expect((await shop.reserveHold(reserve)).hold?.id).toBe(hold!.id);
    expect(await balanceOf("buyer")).toBe(40n);
    expect(await codeOf(shop.reserveHold({ ...reserve, money: coin(61n) }))).toBe("AlreadyExists");
    // Neither the retry nor the refusal left a hold or an expiry timer of its own behind.
    expect(await holdsAndTimersOf("user:buyer")).toEqual({ holds: 1, timers: 1 });
    const capture = {
      holdId: hold!.id,
      creditOwner: "system:revenue",
      amount: 45n,
      kind: TransferKind.SPEND,
    };
    const captured = await shop.captureHold(capture);
    expect(captured.hold?.status).toBe(HoldStatus.CAPTURED);
    await shop.captureHold(capture);
    expect(await balanceOf("buyer")).toBe(55n);
    expect(await codeOf(shop.voidHold({ holdId: hold!.id }))).toBe("FailedPrecondition");
    expect((await auditLedger(h.wallet.store)).ok).toBe(true);
  });

  it("places one hold for copies of a reserve sent at once, and rolls back every other copy's", async () => {
    const reserve = await fundedReserve("twin", 50n, 20n);
    // Each copy inserts its own hold first; all but one then find the first's transfer.
    const answers = await Promise.all(Array.from({ length: 8 }, () => shop.reserveHold(reserve)));
    expect(new Set(answers.map((answer) => answer.hold?.id)).size).toBe(1);
    expect(await balanceOf("twin")).toBe(30n);
    expect(await holdsAndTimersOf("user:twin")).toEqual({ holds: 1, timers: 1 });
    expect((await auditLedger(h.wallet.store)).ok).toBe(true);
  });

  it("voids on request and expires on its own", async () => {
    await admin.mint({ userId: "holder", money: coin(10n), idempotencyKey: key() });
    const voided = await shop.reserveHold({
      owner: "user:holder",
      consentToken: consent("holder"),
      money: coin(4n),
      idempotencyKey: key(),
    });
    await shop.voidHold({ holdId: voided.hold!.id });
    expect(await balanceOf("holder")).toBe(10n);
    await shop.reserveHold({
      owner: "user:holder",
      consentToken: consent("holder"),
      money: coin(7n),
      ttlSeconds: 1,
      idempotencyKey: key(),
    });
    expect(await balanceOf("holder")).toBe(3n);
    await waitFor(async () => (await balanceOf("holder")) === 10n, { timeoutMs: 5_000, what: "hold expiry" });
    expect(
      await codeOf(
        shop.reserveHold({
          owner: "user:holder",
          consentToken: consent("holder"),
          money: coin(11n),
          idempotencyKey: key(),
        }),
      ),
    ).toBe("FailedPrecondition");
    // The refused reserve left no hold and no timer behind.
    expect(await holdsAndTimersOf("user:holder")).toEqual({ holds: 2, timers: 0 });
    expect((await auditLedger(h.wallet.store)).ok).toBe(true);
  });
});

/** The owner's hold rows, and the expiry timers (jobs) still waiting for any of them. */
async function holdsAndTimersOf(owner: string) {
  const [row] = await h.wallet.orm.em.fork().execute<{ holds: number; timers: number }[]>(
    `select count(*)::int as holds,
            (select count(*)::int from ovation_jobs.jobs j
             where j.key in (select 'wallet:hold:' || id from holds where owner = ?)) as timers
     from holds where owner = ?`,
    [owner, owner],
  );
  return row;
}

describe("trust nothing from the network", () => {
  it("refuses callers without the right identity or role, and changes nothing", async () => {
    await admin.mint({ userId: "victim", money: coin(9n), idempotencyKey: key() });
    const mallory = walletClient(await h.env.token("mallory", ["user"]));
    const stranger = walletClient();
    const steal = {
      debitOwner: "user:victim",
      creditOwner: "user:mallory",
      money: coin(9n),
      kind: TransferKind.SPEND,
      idempotencyKey: key(),
    };
    expect(await codeOf(mallory.transfer(steal))).toBe("PermissionDenied");
    expect(await codeOf(mallory.getBalances({ userId: "victim" }))).toBe("PermissionDenied");
    expect(await codeOf(mallory.mint({ userId: "mallory", money: coin(9n), idempotencyKey: key() }))).toBe(
      "PermissionDenied",
    );
    expect(await codeOf(stranger.getBalances({}))).toBe("Unauthenticated");
    const forged = walletClient(`${await h.env.token("root", ["admin"])}x`);
    expect(await codeOf(forged.mint({ userId: "mallory", money: coin(9n), idempotencyKey: key() }))).toBe(
      "Unauthenticated",
    );
    const otherDomain = {
      ...steal,
      event: {
        eventId: crypto.randomUUID(),
        subject: "order.order.paid",
        type: "x",
        payload: new Uint8Array(),
      },
    };
    expect(await codeOf(gift.transfer({ ...otherDomain, debitOwner: "system:mint" }))).toBe(
      "PermissionDenied",
    );
    expect(await balanceOf("victim")).toBe(9n);
    expect(await balanceOf("mallory")).toBe(0n);
  });

  it("lets each service move money only the way its policy allows, and changes nothing otherwise", async () => {
    await admin.mint({ userId: "viewer", money: coin(50n), idempotencyKey: key() });
    const ledgerBefore = await h.wallet.orm.em.fork().execute("select count(*)::int as n from transfers");
    const move = (debitOwner: string, creditOwner: string, kind: TransferKind) => ({
      debitOwner,
      creditOwner,
      money: coin(5n),
      kind,
      idempotencyKey: key(),
    });
    const refusedForGift = [
      move("system:mint", "user:viewer", TransferKind.MINT), // issue money
      move("system:mint", "system:gifts-in-transit", TransferKind.GIFT), // drain the mint
      move("user:viewer", "system:revenue", TransferKind.SPEND), // the shop's movement
      move("system:gifts-in-transit", "user:viewer", TransferKind.EARN), // the wallet's own host credit
      move("system:promotions", "user:viewer", TransferKind.PROMOTION),
      move("user:viewer", "user:mallory", TransferKind.GIFT), // viewer to viewer
      move("user:viewer", "system:gifts-in-transit", TransferKind.SPEND), // right accounts, wrong kind
    ];
    for (const request of refusedForGift)
      expect(await codeOf(gift.transfer(request))).toBe("PermissionDenied");
    expect(
      await codeOf(
        gift.reserveHold({
          owner: "user:viewer",
          consentToken: consent("viewer"),
          money: coin(5n),
          idempotencyKey: key(),
        }),
      ),
    ).toBe("PermissionDenied");
    // The shop may hold and capture to revenue, but not move coins directly or to itself.
    expect(
      await codeOf(shop.transfer(move("user:viewer", "system:gifts-in-transit", TransferKind.GIFT))),
    ).toBe("PermissionDenied");
    // Nor mint coins, pay refunds, or empty the holds account: those need a fact the wallet checks.
    for (const request of [
      move("system:mint", "user:viewer", TransferKind.PURCHASE),
      move("system:revenue", "user:viewer", TransferKind.REFUND),
      move("system:holds", "system:revenue", TransferKind.SPEND),
    ])
      expect(await codeOf(shop.transfer(request))).toBe("PermissionDenied");
    // The discount service moves no money itself: the wallet pays credits out of funded budgets.
    const discount = walletClient(await h.env.serviceToken("discount"));
    expect(
      await codeOf(discount.transfer(move("system:promotions", "user:viewer", TransferKind.PROMOTION))),
    ).toBe("PermissionDenied");
    // The gift service debits a viewer only with that viewer's own token.
    const giftOf = (consentToken: string) =>
      gift.transfer({ ...move("user:viewer", "system:gifts-in-transit", TransferKind.GIFT), consentToken });
    expect(await codeOf(giftOf(""))).toBe("PermissionDenied");
    expect(await codeOf(giftOf(consent("fan")))).toBe("PermissionDenied");
    expect(await codeOf(giftOf(await h.env.serviceToken("gift")))).toBe("PermissionDenied");
    expect(await codeOf(giftOf(`${consent("viewer")}x`))).toBe("PermissionDenied");
    expect(
      await codeOf(shop.reserveHold({ owner: "user:viewer", money: coin(5n), idempotencyKey: key() })),
    ).toBe("PermissionDenied");
    expect(
      await codeOf(
        shop.reserveHold({
          owner: "user:viewer",
          consentToken: consent("fan"),
          money: coin(5n),
          idempotencyKey: key(),
        }),
      ),
    ).toBe("PermissionDenied");
    // A service the wallet has no policy for may move nothing; admins only mint.
    const unknown = walletClient(await h.env.serviceToken("pk"));
    expect(
      await codeOf(unknown.transfer(move("user:viewer", "system:gifts-in-transit", TransferKind.GIFT))),
    ).toBe("PermissionDenied");
    expect(await codeOf(admin.transfer(move("user:viewer", "user:mallory", TransferKind.SPEND)))).toBe(
      "PermissionDenied",
    );
    expect(await balanceOf("viewer")).toBe(50n);
    expect(await h.wallet.orm.em.fork().execute("select count(*)::int as n from transfers")).toEqual(
      ledgerBefore,
    );
    // The movement the gift service exists for still works, and names its caller in the journal.
    const sent = await giftOf(consent("viewer"));
    const [row] = await h.wallet.orm.em
      .fork()
      .execute<{ requested_by: string }[]>("select requested_by from transfers where id = ?", [
        sent.transfer!.id,
      ]);
    expect(row!.requested_by).toBe("service:gift");
    const minted = await admin.mint({ userId: "viewer", money: coin(1n), idempotencyKey: key() });
    expect(minted.transfer?.metadata).toEqual({ mintedBy: "root" });
  });

  it("refuses tokens a leaked service key signs for anyone but its own service, and changes nothing", async () => {
    await admin.mint({ userId: "target", money: coin(7n), idempotencyKey: key() });
    const giftKey = await readSigningKey(h.env.keys.service("gift"));
    const issuerKey = await readSigningKey(h.env.keys.issuer);
    const now = Math.floor(Date.now() / 1000);
    const claims = { iss: "gift", sub: "gift", aud: "ovation", roles: ["service"], iat: now, exp: now + 60 };
    const sign = (signingKey: SigningKey, extra: JWTPayload) =>
      new SignJWT({ ...claims, ...extra })
        .setProtectedHeader({ alg: "EdDSA", kid: signingKey.kid })
        .sign(signingKey.key);
    const forgeries = {
      asAdmin: await sign(giftKey, { sub: "root", roles: ["admin"] }),
      asUser: await sign(giftKey, { sub: "target", roles: ["user"] }),
      asGiftAndAdmin: await sign(giftKey, { roles: ["service", "admin"] }),
      asAnotherService: await sign(giftKey, { iss: "order", sub: "order" }),
      issuerMintingAService: await sign(issuerKey, { iss: "ovation" }),
    };
    const steal = {
      debitOwner: "user:target",
      creditOwner: "user:thief",
      money: coin(7n),
      kind: TransferKind.SPEND,
      idempotencyKey: key(),
    };
    for (const [name, token] of Object.entries(forgeries)) {
      const forged = walletClient(token);
      expect(
        await codeOf(forged.mint({ userId: "thief", money: coin(9n), idempotencyKey: key() })),
        name,
      ).toBe("Unauthenticated");
      expect(await codeOf(forged.getBalances({ userId: "target" })), name).toBe("Unauthenticated");
      expect(await codeOf(forged.transfer(steal)), name).toBe("Unauthenticated");
    }
    expect(await balanceOf("target")).toBe(7n);
    expect(await balanceOf("thief")).toBe(0n);
  });

  it("tells services apart by the verified subject: only gift publishes gift events", async () => {
    await admin.mint({ userId: "fan", money: coin(2n), idempotencyKey: key() });
    const giftSent = () => ({
      debitOwner: "user:fan",
      consentToken: consent("fan"),
      creditOwner: "system:gifts-in-transit",
      money: coin(1n),
      kind: TransferKind.GIFT,
      idempotencyKey: key(),
      event: {
        eventId: crypto.randomUUID(),
        subject: "gift.gift.sent",
        type: "ovation.type.v1.Money",
        payload: new Uint8Array([8, 1]),
      },
    });
    const gateway = walletClient(await h.env.serviceToken("gateway"));
    expect(await codeOf(gateway.transfer(giftSent()))).toBe("PermissionDenied");
    expect(await codeOf(gift.transfer(giftSent()))).toBe("ok");
    expect(await balanceOf("fan")).toBe(1n);
  });

  it("answers bad input with INVALID_ARGUMENT naming the field, and changes nothing", async () => {
    const bad = [
      {
        debitOwner: "alice",
        creditOwner: "user:b",
        money: coin(1n),
        kind: TransferKind.SPEND,
        idempotencyKey: key(),
      },
      {
        debitOwner: "user:a",
        consentToken: consent("a"),
        creditOwner: "user:a",
        money: coin(1n),
        kind: TransferKind.SPEND,
        idempotencyKey: key(),
      },
      {
        debitOwner: "user:a",
        consentToken: consent("a"),
        creditOwner: "user:b",
        money: coin(-5n),
        kind: TransferKind.SPEND,
        idempotencyKey: key(),
      },
      {
        debitOwner: "user:a",
        consentToken: consent("a"),
        creditOwner: "user:b",
        money: coin(10n ** 18n),
        kind: TransferKind.SPEND,
        idempotencyKey: key(),
      },
      {
        debitOwner: "user:a",
        consentToken: consent("a"),
        creditOwner: "user:b",
        money: { asset: "coin", amount: 1n },
        kind: TransferKind.SPEND,
        idempotencyKey: key(),
      },
      {
        debitOwner: "user:a",
        consentToken: consent("a"),
        creditOwner: "user:b",
        money: coin(1n),
        kind: TransferKind.UNSPECIFIED,
        idempotencyKey: key(),
      },
      {
        debitOwner: "user:a",
        consentToken: consent("a"),
        creditOwner: "user:b",
        money: coin(1n),
        kind: TransferKind.SPEND,
        idempotencyKey: "",
      },
      { debitOwner: "user:a", creditOwner: "user:b", kind: TransferKind.SPEND, idempotencyKey: key() },
    ];
    for (const request of bad) expect(await codeOf(gift.transfer(request))).toBe("InvalidArgument");
    try {
      await gift.transfer(bad[2]!);
    } catch (error) {
      expect(ConnectError.from(error).rawMessage).toContain("money.amount: must be at least 1");
    }
    expect(
      await codeOf(admin.mint({ userId: "x", money: { asset: "GOLD", amount: 1n }, idempotencyKey: key() })),
    ).toBe("InvalidArgument");
    expect(await codeOf(shop.voidHold({ holdId: "not-a-uuid" }))).toBe("InvalidArgument");
    expect(await codeOf(shop.voidHold({ holdId: crypto.randomUUID() }))).toBe("NotFound");
    expect((await auditLedger(h.wallet.store)).ok).toBe(true);
  });
});

describe("credit events", () => {
  /** Every credit event of `userId` so far, read back from the WALLET stream (as ops: a reader). */
  async function creditEventsOf(userId: string) {
    await using bus = await EventBus.connect({
      url: h.env.natsUrl,
      prefix: h.env.prefix,
      name: "credit-reader",
      ...h.env.natsOps,
    });
    const consumer = await bus.js.consumers.get(bus.names.stream("WALLET"), {
      filter_subjects: bus.names.subject("wallet.transfer.credit.>"),
    });
    const events: { subject: string; kind: number; reason: number; amount: bigint; transferId: string }[] =
      [];
    const pending = (await consumer.info(false)).num_pending;
    if (pending > 0)
      for await (const message of await consumer.fetch({ max_messages: pending, expires: 5_000 })) {
        const { transfer, credit } = fromBinary(TransferCommittedSchema, message.data);
        if (credit?.userId !== userId) continue;
        expect(credit.transferId).toBe(transfer?.id);
        events.push({
          subject: bus.names.unprefixed(message.subject),
          kind: credit.kind,
          reason: credit.reason,
          amount: credit.money?.amount ?? 0n,
          transferId: credit.transferId,
        });
      }
    return events;
  }

  it("publishes each transfer once, as purchased, spent or earned when it is a credit event; holds moving are none", async () => {
    const minted = await admin.mint({ userId: "cred", money: coin(100n), idempotencyKey: key() });
    await gift.transfer(giftTransfer("cred", 10n, 10n, "host-cred"));
    const { hold } = await shop.reserveHold({
      owner: "user:cred",
      consentToken: consent("cred"),
      money: coin(30n),
      idempotencyKey: key(),
    });
    await shop.captureHold({
      holdId: hold!.id,
      creditOwner: "system:revenue",
      amount: 20n,
      kind: TransferKind.SPEND,
    });
    await shop.refundHold({ holdId: hold!.id, amount: 5n, idempotencyKey: key() });
    await waitFor(outboxEmpty, { what: "the relay to drain the outbox" });
    const events = await creditEventsOf("cred");
    expect(events.map((e) => [e.subject, e.reason, e.amount])).toEqual([
      ["wallet.transfer.credit.purchased", TransferKind.MINT, 100n],
      ["wallet.transfer.credit.spent", TransferKind.GIFT, 10n],
      // The capture, paid by the hold's owner; reserving and releasing the rest make none.
      ["wallet.transfer.credit.spent", TransferKind.SPEND, 20n],
      ["wallet.transfer.credit.earned", TransferKind.REFUND, 5n],
    ]);
    expect(events.map((e) => e.kind)).toEqual([
      CreditEventKind.PURCHASED,
      CreditEventKind.SPENT,
      CreditEventKind.SPENT,
      CreditEventKind.EARNED,
    ]);
    expect(events[0]!.transferId).toBe(minted.transfer!.id);
  });

  it("lets gift pay revenue only with a BoostPurchased that matches the payment", async () => {
    await admin.mint({ userId: "booster", money: coin(50n), idempotencyKey: key() });
    const boost = (amount: bigint, buyerId = "booster") => {
      const boostId = crypto.randomUUID();
      return {
        eventId: boostId,
        subject: "wallet.boost.purchased",
        type: BoostPurchasedSchema.typeName,
        payload: toBinary(
          BoostPurchasedSchema,
          create(BoostPurchasedSchema, { boostId, buyerId, money: coin(amount), targetId: "hana" }),
        ),
      };
    };
    const pay = (event: (Omit<ReturnType<typeof boost>, "type"> & { type: string }) | undefined) =>
      gift.transfer({
        debitOwner: "user:booster",
        consentToken: consent("booster"),
        creditOwner: "system:revenue",
        money: coin(20n),
        kind: TransferKind.SPEND,
        idempotencyKey: key(),
        event,
      });
    expect(await codeOf(pay(undefined))).toBe("PermissionDenied");
    expect(await codeOf(pay(boost(21n)))).toBe("PermissionDenied");
    expect(await codeOf(pay(boost(20n, "someone-else")))).toBe("PermissionDenied");
    // The boost subject carries BoostPurchased only; other subjects of the wallet's are not gift's.
    expect(await codeOf(pay({ ...boost(20n), type: "ovation.type.v1.Money" }))).toBe("PermissionDenied");
    expect(await codeOf(pay({ ...boost(20n), subject: "wallet.boost.refunded" }))).toBe("PermissionDenied");
    // Nor can another movement of gift's announce something else on the boost subject.
    expect(
      await codeOf(
        gift.transfer({
          debitOwner: "user:booster",
          consentToken: consent("booster"),
          creditOwner: "system:gifts-in-transit",
          money: coin(1n),
          kind: TransferKind.GIFT,
          idempotencyKey: key(),
          event: { ...boost(1n), type: "ovation.type.v1.Money" },
        }),
      ),
    ).toBe("PermissionDenied");
    expect(await balanceOf("booster")).toBe(50n);
    expect(await codeOf(pay(boost(20n)))).toBe("ok");
    expect(await balanceOf("booster")).toBe(30n);
  });
});
