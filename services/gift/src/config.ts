import { portVariable, serviceConfigSchema, serviceKeyFileVariable, serviceSchema, z } from "@ovation/config";

/** The gift service's identity: its key id is service:gift:<version>; the wallet sees it as "gift". */
export const giftServiceName = "gift";

export const giftConfigSchema = serviceSchema(
  giftServiceName,
  serviceConfigSchema.extend({
    PORT: portVariable(50052),
    WALLET_URL: z.url().default("http://127.0.0.1:50051"),
    /** Same sender, gift and room within this window continue a combo streak. */
    GIFT_COMBO_WINDOW_MS: z.coerce.number().int().min(100).max(600_000).default(10_000),
    DATABASE_POOL_MAX: z.coerce.number().int().min(2).max(200).default(20),
    /** Required: the gift service calls the wallet with service tokens signed by this key. */
    SERVICE_KEY_FILE: serviceKeyFileVariable(giftServiceName),
  }),
);

export type GiftConfig = z.output<typeof giftConfigSchema>;
