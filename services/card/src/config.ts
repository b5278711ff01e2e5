import {
  poolMaxVariable,
  portVariable,
  serviceConfigSchema,
  serviceKeyFileVariable,
  serviceSchema,
  z,
} from "@ovation/config";

/** The card processor's identity: its key (service:card:<version>) signs payment results. */
export const cardServiceName = "card";

export const cardConfigSchema = serviceSchema(
  cardServiceName,
  serviceConfigSchema.extend({
    PORT: portVariable(50056),
    DATABASE_POOL_MAX: poolMaxVariable("card"),
    /** Required: signs every payment result. No other process holds it. */
    SERVICE_KEY_FILE: serviceKeyFileVariable(cardServiceName),
    /** Services allowed to charge (merchants), comma separated. */
    CARD_MERCHANTS: z
      .string()
      .default("order")
      .transform((list) => list.split(",").map((name) => name.trim()))
      .pipe(z.array(z.string().regex(/^[a-z][a-z0-9-]{0,31}$/)).min(1)),
    /** Share of charges the simulator declines (0..1). */
    CARD_FAILURE_RATE: z.coerce.number().min(0).max(1).default(0.1),
    /** How long the simulator takes to decide a charge or a refund. */
    CARD_LATENCY_MS: z.coerce.number().int().min(0).max(60_000).default(200),
    /** The same seed gives the same declines (tests, soaks). */
    CARD_SEED: z.string().min(1).default("ovation"),
    /**
     * Customers whose cards are always declined, comma separated: the simulator's test cards
     * (as a real processor's sandbox has card numbers that always decline).
     */
    CARD_DECLINE_CUSTOMERS: z
      .string()
      .default("")
      .transform((list) =>
        list
          .split(",")
          .map((id) => id.trim())
          .filter((id) => id !== ""),
      ),
  }),
  // It answers merchants over RPC and never connects to NATS.
  { bus: false },
);

export type CardConfig = z.output<typeof cardConfigSchema>;
