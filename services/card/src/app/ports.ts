// What the card use cases need from the outside world, declared here so that they depend on
// these interfaces and store/ implements them (the dependency points inward): the charges
// table. main.ts wires the concrete store.
import type { EntityManager } from "@ovation/db";

/** A charge as recorded: its signed result and, once refunded, its refund. */
export interface ChargeRow {
  id: string;
  merchant: string;
  idempotencyKey: string;
  requestHash: Buffer;
  reference: string;
  customerId: string;
  asset: string;
  amount: bigint;
  succeeded: boolean;
  result: Uint8Array;
  signature: Uint8Array;
  keyId: string;
  refund: { id: string; key: string; amount: bigint } | null;
}

/** The charges of every merchant, keyed by (merchant, idempotency key). */
export interface ChargeRepository {
  /** A new unit of work; `transactional` on it runs a transaction. */
  fork(): EntityManager;
  byKey(merchant: string, idempotencyKey: string, em?: EntityManager): Promise<ChargeRow | null>;
  /** Inserts the charge unless its key was taken meanwhile; returns the row that holds the key. */
  insert(charge: Omit<ChargeRow, "refund">): Promise<ChargeRow>;
  /** The charge, row-locked until the transaction ends; null when the merchant has no such charge. */
  lock(em: EntityManager, merchant: string, chargeId: string): Promise<ChargeRow | null>;
  recordRefund(
    em: EntityManager,
    chargeId: string,
    refund: { id: string; key: string; amount: bigint },
  ): Promise<void>;
}
