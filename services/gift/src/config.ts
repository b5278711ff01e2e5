import { hasTokenKey, portVariable, serviceConfigSchema, z } from "@ovation/config";

export const giftConfigSchema = serviceConfigSchema
  .extend({
    PORT: portVariable(50052),
    WALLET_URL: z.url().default("http://127.0.0.1:50051"),
    /** Same sender, gift and room within this window continue a combo streak. */
    GIFT_COMBO_WINDOW_MS: z.coerce.number().int().min(100).max(600_000).default(10_000),
    DATABASE_POOL_MAX: z.coerce.number().int().min(2).max(200).default(20),
  })
  .refine(...hasTokenKey);

export type GiftConfig = z.output<typeof giftConfigSchema>;
