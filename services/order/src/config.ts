import { portVariable, serviceConfigSchema, serviceKeyFileVariable, serviceSchema, z } from "@ovation/config";

/** The order service's identity: the wallet sees it as "order" (holds, capture, coin packs). */
export const orderServiceName = "order";

export const orderConfigSchema = serviceSchema(
  orderServiceName,
  serviceConfigSchema.extend({
    PORT: portVariable(50055),
    DATABASE_POOL_MAX: z.coerce.number().int().min(2).max(200).default(20),
    WALLET_URL: z.url().default("http://127.0.0.1:50051"),
    /** Required: the payment module calls the wallet with service tokens signed by this key. */
    SERVICE_KEY_FILE: serviceKeyFileVariable(orderServiceName),
    /** How long each saga step (reservation, payment) may take before the order fails. */
    ORDER_STEP_TIMEOUT_MS: z.coerce.number().int().min(100).max(3_600_000).default(30_000),
    /** The card processor (services/card): charges, refunds, signed payment results. */
    CARD_URL: z.url().default("http://127.0.0.1:50056"),
  }),
);

export type OrderConfig = z.output<typeof orderConfigSchema>;
