import {
  poolMaxVariable,
  portVariable,
  serviceConfigSchema,
  serviceKeyFileVariable,
  serviceSchema,
  z,
} from "@ovation/config";

/** The gift service's identity: its key id is service:gift:<version>; the wallet sees it as "gift". */
export const giftServiceName = "gift";

export const giftConfigSchema = serviceSchema(
  giftServiceName,
  serviceConfigSchema.extend({
    PORT: portVariable(50052),
    WALLET_URL: z.url().default("http://127.0.0.1:50051"),
    /** The PK service, asked whether a battle side can be boosted; unset: PK sides cannot be. */
    PK_URL: z.url().optional(),
    /** Same sender, gift and room within this window continue a combo streak. */
    GIFT_COMBO_WINDOW_MS: z.coerce.number().int().min(100).max(600_000).default(10_000),
    DATABASE_POOL_MAX: poolMaxVariable("gift"),
    /** Group commit: sends per claim_sends call and per TransferBatch wallet call, at most. */
    GIFT_BATCH_MAX: z.coerce.number().int().min(1).max(256).default(256),
    /** Sends waiting for a batch at most; beyond, a send is refused as UNAVAILABLE. */
    GIFT_QUEUE_MAX: z.coerce.number().int().min(1).max(100_000).default(4_096),
    /** Required: the gift service calls the wallet with service tokens signed by this key. */
    SERVICE_KEY_FILE: serviceKeyFileVariable(giftServiceName),
  }),
);

export type GiftConfig = z.output<typeof giftConfigSchema>;
