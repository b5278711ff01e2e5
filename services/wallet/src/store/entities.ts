// Read models of the wallet tables. Writes to accounts and transfers go through post_transfers
// (migrations.ts); holds are written through the entity with optimistic checks on status.
import { defineEntity, p } from "@mikro-orm/core";

export const Account = defineEntity({
  name: "Account",
  tableName: "accounts",
  properties: {
    owner: p.string().primary(),
    asset: p.string().primary(),
    shard: p.integer().primary(),
    balance: p.bigint(),
    updatedAt: p.datetime(),
  },
});

export const Transfer = defineEntity({
  name: "Transfer",
  tableName: "transfers",
  properties: {
    id: p.uuid().primary(),
    debitOwner: p.string(),
    creditOwner: p.string(),
    asset: p.string(),
    amount: p.bigint(),
    kind: p.smallint(),
    reference: p.string(),
    metadata: p.json<Record<string, string>>(),
    holdId: p.uuid().nullable(),
    debitBalance: p.bigint().nullable(),
    createdAt: p.datetime(),
    carriedEventId: p.uuid().nullable(),
    requestedBy: p.string(),
    idempotencyKey: p.string(),
  },
});

export const Hold = defineEntity({
  name: "Hold",
  tableName: "holds",
  properties: {
    id: p.uuid().primary(),
    owner: p.string(),
    asset: p.string(),
    amount: p.bigint(),
    status: p.smallint(),
    reference: p.string(),
    capturedAmount: p.bigint(),
    refundedAmount: p.bigint().default("0"),
    refundTransferId: p.uuid().nullable(),
    idempotencyKey: p.string().nullable(),
    requestHash: p.blob().nullable(),
    expiresAt: p.datetime(),
    createdAt: p.datetime(),
    updatedAt: p.datetime(),
  },
});

export const walletEntities = [Account, Transfer, Hold];
