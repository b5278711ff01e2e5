import {
  infrastructureConfigSchema,
  poolMaxVariable,
  portVariable,
  serviceConfigSchema,
  serviceKeyFileVariable,
  serviceSchema,
  z,
} from "@ovation/config";

/** The wallet's identity: its key id is service:wallet:<version>, its service tokens' subject "wallet". */
export const walletServiceName = "wallet";

const walletSettings = {
  PORT: portVariable(50051),
  /** Asset codes the ledger accepts, comma separated. */
  WALLET_ASSETS: z
    .string()
    .default("COIN,TOMAN")
    .transform((list) => list.split(",").map((code) => code.trim()))
    .pipe(z.array(z.string().regex(/^[A-Z][A-Z0-9]{1,15}$/, "asset codes are 2..16 of A-Z and 0-9")).min(1)),
  /** Rows each system account is spread over; more rows, less contention on hot accounts. */
  WALLET_SYSTEM_SHARDS: z.coerce.number().int().min(1).max(256).default(16),
  DATABASE_POOL_MAX: poolMaxVariable("wallet"),
  /** Host's share of a gift in basis points; the platform keeps the rest. */
  WALLET_HOST_SHARE_BPS: z.coerce.number().int().min(0).max(10_000).default(7_000),
  /** Transfers group-committed per database call at most. */
  WALLET_TRANSFER_BATCH_MAX: z.coerce.number().int().min(1).max(1_000).default(256),
  /** Transfers waiting for a batch at most; beyond, requests are refused as UNAVAILABLE. */
  WALLET_TRANSFER_QUEUE_MAX: z.coerce.number().int().min(1).max(100_000).default(4_096),
  /** Gifts credited per transaction at most. */
  WALLET_CREDIT_BATCH_MAX: z.coerce.number().int().min(1).max(1_000).default(256),
  /** The asset card payments are made in (coin packs are paid in it). */
  WALLET_CARD_ASSET: z
    .string()
    .regex(/^[A-Z][A-Z0-9]{1,15}$/)
    .default("TOMAN"),
  /**
   * The lowest price of one coin bought by card, in WALLET_CARD_ASSET minor units: coins are
   * minted for a signed card payment only when it paid at least this much a coin, so a
   * compromised shop cannot sell a million coins for one toman.
   */
  WALLET_COIN_PRICE_MIN: z.coerce.bigint().min(1n).default(100n),
};

/** The operator commands (`./ov ledger`, `./ov dlq`) verify no tokens, so they need no keys. */
export const walletCliConfigSchema = infrastructureConfigSchema.extend(walletSettings);

export type WalletCliConfig = z.output<typeof walletCliConfigSchema>;

export const walletConfigSchema = serviceSchema(
  walletServiceName,
  serviceConfigSchema.extend({
    ...walletSettings,
    /** The wallet calls no other service yet; a key given to it must be its own. */
    SERVICE_KEY_FILE: serviceKeyFileVariable(walletServiceName).optional(),
  }),
);

export type WalletConfig = z.output<typeof walletConfigSchema>;
