// The card processor simulator against the real Postgres: every result is signed with the
// processor's key and checks out with the public key set, a changed amount does not; a retry
// gets the same signed bytes; declines follow the seed; a refund is at most the charge, once;
// only merchants may charge, and each sees only its own charges.
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { bearerInterceptor, createStatementVerifier, StatementError, statementPurposes } from "@ovation/auth";
import { readJwksFile } from "@ovation/config";
import {
  CardService,
  ChargeStatus,
  PaymentResultSchema,
  type SignedPaymentResult,
} from "@ovation/proto/gen/ovation/card/v1/card_pb.ts";
import { codeOf, type TestEnvironment, testEnvironment } from "@ovation/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type CardApp, startCard } from "../src/main.ts";

let env: TestEnvironment;
let card: CardApp;
let declining: CardApp;

const clientOf = (app: CardApp, token: string | (() => Promise<string>)) =>
  createClient(
    CardService,
    createGrpcTransport({
      baseUrl: app.server.url,
      interceptors: [bearerInterceptor(typeof token === "string" ? () => token : token)],
    }),
  );
const merchant = () => clientOf(card, () => env.serviceToken("order"));
const key = () => crypto.randomUUID();
const toman = (amount: bigint) => ({ asset: "TOMAN", amount });

beforeAll(async () => {
  env = await testEnvironment();
  const settings = { ...env.env, PORT: "0", CARD_LATENCY_MS: "0" };
  card = await startCard({ ...settings, CARD_FAILURE_RATE: "0" });
  declining = await startCard({ ...settings, CARD_FAILURE_RATE: "1" });
});
afterAll(async () => {
  await declining?.close();
  await card?.close();
  await env?.[Symbol.asyncDispose]();
});

const verify = () =>
  createStatementVerifier(readJwksFile(env.keys.jwks), "card", statementPurposes.paymentResult);
const resultOf = (signed: SignedPaymentResult) => fromBinary(PaymentResultSchema, signed.result);

describe("charges", () => {
  it("are signed by the processor's key, and a retry answers the same signed bytes", async () => {
    const idempotencyKey = key();
    const request = {
      idempotencyKey,
      reference: "order:1",
      customerId: "alice",
      amount: toman(90_000n),
      metadata: { coins: "500" },
    };
    const { result } = await merchant().charge(request);
    const payment = resultOf(result!);
    expect(payment).toMatchObject({
      merchant: "order",
      reference: "order:1",
      customerId: "alice",
      status: ChargeStatus.SUCCEEDED,
      metadata: { coins: "500" },
    });
    expect(payment.amount).toMatchObject(toman(90_000n));
    expect(result!.keyId).toMatch(/^service:card:/);
    await verify()({ payload: result!.result, signature: result!.signature, keyId: result!.keyId });
    const again = await merchant().charge(request);
    expect(Buffer.from(again.result!.result).equals(Buffer.from(result!.result))).toBe(true);
    expect((await merchant().getCharge({ idempotencyKey })).result!.signature).toEqual(result!.signature);
    expect(await codeOf(merchant().charge({ ...request, amount: toman(1n) }))).toBe("AlreadyExists");
  });

  it("do not check out once a byte of the result is changed (a tampered amount)", async () => {
    const { result } = await merchant().charge({
      idempotencyKey: key(),
      reference: "order:2",
      customerId: "bob",
      amount: toman(1_000n),
      metadata: {},
    });
    const bytes = new Uint8Array(result!.result);
    // The amount is a varint inside the Money message: rewrite the whole message with a bigger one.
    const tampered = resultOf(result!);
    tampered.amount!.amount = 9_000_000n;
    const forged = toBinary(PaymentResultSchema, tampered);
    expect(Buffer.from(forged).equals(Buffer.from(bytes))).toBe(false);
    await expect(
      verify()({ payload: forged, signature: result!.signature, keyId: result!.keyId }),
    ).rejects.toThrow(StatementError);
  });

  it("are declined as the seed says, the same way on a retry", async () => {
    const declined = clientOf(declining, () => env.serviceToken("order"));
    const request = {
      idempotencyKey: key(),
      reference: "order:3",
      customerId: "carol",
      amount: toman(5n),
      metadata: {},
    };
    const first = resultOf((await declined.charge(request)).result!);
    expect(first.status).toBe(ChargeStatus.DECLINED);
    expect(first.declineReason).toBe("card declined");
    expect(resultOf((await declined.charge(request)).result!).chargeId).toBe(first.chargeId);
  });
});

describe("refunds", () => {
  it("give back at most the charge, once; a retry of the refund gets the first answer", async () => {
    const { result } = await merchant().charge({
      idempotencyKey: key(),
      reference: "order:4",
      customerId: "dave",
      amount: toman(1_000n),
      metadata: {},
    });
    const chargeId = resultOf(result!).chargeId;
    expect(await codeOf(merchant().refund({ chargeId, amount: toman(1_001n), idempotencyKey: key() }))).toBe(
      "InvalidArgument",
    );
    const refundKey = key();
    const refunded = await merchant().refund({ chargeId, amount: toman(1_000n), idempotencyKey: refundKey });
    expect(refunded.amount).toMatchObject(toman(1_000n));
    const retried = await merchant().refund({ chargeId, amount: toman(1_000n), idempotencyKey: refundKey });
    expect(retried.refundId).toBe(refunded.refundId);
    expect(await codeOf(merchant().refund({ chargeId, amount: toman(1n), idempotencyKey: key() }))).toBe(
      "FailedPrecondition",
    );
  });

  it("refuse a declined charge", async () => {
    const declined = clientOf(declining, () => env.serviceToken("order"));
    const { result } = await declined.charge({
      idempotencyKey: key(),
      reference: "order:5",
      customerId: "erin",
      amount: toman(10n),
      metadata: {},
    });
    const chargeId = resultOf(result!).chargeId;
    expect(await codeOf(declined.refund({ chargeId, amount: toman(10n), idempotencyKey: key() }))).toBe(
      "FailedPrecondition",
    );
  });
});

describe("callers", () => {
  it("are merchants only: other services, users and anonymous callers are refused", async () => {
    const request = {
      idempotencyKey: key(),
      reference: "r",
      customerId: "x",
      amount: toman(1n),
      metadata: {},
    };
    expect(await codeOf(clientOf(card, () => env.serviceToken("gift")).charge(request))).toBe(
      "PermissionDenied",
    );
    expect(await codeOf(clientOf(card, await env.token("mallory", ["admin"])).charge(request))).toBe(
      "PermissionDenied",
    );
    expect(
      await codeOf(
        createClient(CardService, createGrpcTransport({ baseUrl: card.server.url })).charge(request),
      ),
    ).toBe("Unauthenticated");
    expect(await codeOf(merchant().charge({ ...request, amount: toman(0n) }))).toBe("InvalidArgument");
  });
});
