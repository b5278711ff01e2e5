import { portVariable, serviceConfigSchema, serviceKeyFileVariable, serviceSchema, z } from "@ovation/config";

/** The order service's identity: the wallet sees it as "order" (holds, capture, coin packs). */
export const orderServiceName = "order";

export const orderConfigSchema = serviceSchema(
  orderServiceName,
  serviceConfigSchema.extend({
    PORT: portVariable(50055),
    DATABASE_POOL_MAX: z.coerce.number().int().min(2).max(200).default(20),
    /** The order service will call the wallet with tokens signed by this key. */
    SERVICE_KEY_FILE: serviceKeyFileVariable(orderServiceName).optional(),
  }),
);

export type OrderConfig = z.output<typeof orderConfigSchema>;
