// Use cases of the card processor simulator: charge (idempotent per merchant and key, declined
// by the seeded roll, signed), look a charge up by its key, refund once.
import { setTimeout as sleep } from "node:timers/promises";
import { create, toBinary } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { StatementSigner } from "@ovation/auth";
import { retryRaces } from "@ovation/db";
import {
  ChargeStatus,
  PaymentResultSchema,
  type SignedPaymentResult,
  SignedPaymentResultSchema,
} from "@ovation/proto/gen/ovation/card/v1/card_pb.ts";
import { v7 as uuidv7 } from "uuid";
import {
  CardError,
  type ChargeFields,
  chargeFingerprint,
  isDeclined,
  refundDecision,
} from "../domain/charges.ts";
import type { ChargeRepository, ChargeRow } from "./ports.ts";

export interface SimulatorSettings {
  /** Share of charges declined, 0..1. */
  failureRate: number;
  /** How long the processor takes to decide a charge or a refund. */
  latencyMs: number;
  seed: string;
  /** Test cards: these customers are always declined. */
  declineCustomers: readonly string[];
}

export interface CardDeps {
  store: ChargeRepository;
  sign: StatementSigner;
  settings: SimulatorSettings;
}

export interface ChargeCommand extends ChargeFields {
  merchant: string;
  idempotencyKey: string;
}

const signedOf = (row: ChargeRow): SignedPaymentResult =>
  create(SignedPaymentResultSchema, { result: row.result, signature: row.signature, keyId: row.keyId });

function sameRequest(row: ChargeRow, hash: Buffer): ChargeRow {
  if (!row.requestHash.equals(hash))
    throw new CardError("idempotency_conflict", "idempotency key reused with another charge");
  return row;
}

export async function charge(deps: CardDeps, command: ChargeCommand): Promise<SignedPaymentResult> {
  const hash = chargeFingerprint(command);
  const earlier = await deps.store.byKey(command.merchant, command.idempotencyKey);
  if (earlier !== null) return signedOf(sameRequest(earlier, hash));
  if (deps.settings.latencyMs > 0) await sleep(deps.settings.latencyMs);
  const declined =
    deps.settings.declineCustomers.includes(command.customerId) ||
    isDeclined(deps.settings.seed, command.merchant, command.idempotencyKey, deps.settings.failureRate);
  const id = uuidv7();
  const result = toBinary(
    PaymentResultSchema,
    create(PaymentResultSchema, {
      chargeId: id,
      merchant: command.merchant,
      reference: command.reference,
      customerId: command.customerId,
      amount: { asset: command.asset, amount: command.amount },
      status: declined ? ChargeStatus.DECLINED : ChargeStatus.SUCCEEDED,
      declineReason: declined ? "card declined" : "",
      metadata: command.metadata,
      createTime: timestampFromDate(new Date()),
    }),
  );
  const signed = await deps.sign(result);
  // A concurrent duplicate may have inserted first: whichever row holds the key is the answer.
  const row = await deps.store.insert({
    id,
    merchant: command.merchant,
    idempotencyKey: command.idempotencyKey,
    requestHash: hash,
    reference: command.reference,
    customerId: command.customerId,
    asset: command.asset,
    amount: command.amount,
    succeeded: !declined,
    result,
    signature: signed.signature,
    keyId: signed.keyId,
  });
  return signedOf(sameRequest(row, hash));
}

export async function getCharge(
  deps: CardDeps,
  merchant: string,
  idempotencyKey: string,
): Promise<SignedPaymentResult> {
  const row = await deps.store.byKey(merchant, idempotencyKey);
  if (row === null)
    throw new CardError("charge_not_found", `no charge with idempotency key ${idempotencyKey}`);
  return signedOf(row);
}

export interface RefundCommand {
  merchant: string;
  chargeId: string;
  asset: string;
  amount: bigint;
  idempotencyKey: string;
}

export async function refund(
  deps: CardDeps,
  command: RefundCommand,
): Promise<{ refundId: string; chargeId: string; asset: string; amount: bigint }> {
  if (deps.settings.latencyMs > 0) await sleep(deps.settings.latencyMs);
  return retryRaces(() =>
    deps.store.fork().transactional(async (em) => {
      const row = await deps.store.lock(em, command.merchant, command.chargeId);
      if (row === null) throw new CardError("charge_not_found", `no charge ${command.chargeId}`);
      const decision = refundDecision(row, { key: command.idempotencyKey, ...command });
      const refundId = decision === "replay" ? row.refund!.id : uuidv7();
      if (decision === "refund")
        await deps.store.recordRefund(em, row.id, {
          id: refundId,
          key: command.idempotencyKey,
          amount: command.amount,
        });
      return { refundId, chargeId: row.id, asset: row.asset, amount: command.amount };
    }),
  );
}
