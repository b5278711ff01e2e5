import {
  poolMaxVariable,
  portVariable,
  serviceConfigSchema,
  serviceKeyFileVariable,
  serviceSchema,
  z,
} from "@ovation/config";

/** The discount service's identity: the wallet credits its redemptions under policy "discount". */
export const discountServiceName = "discount";

const bounded = (min: number, max: number, fallback: number) =>
  z.coerce.number().int().min(min).max(max).default(fallback);

export const discountConfigSchema = serviceSchema(
  discountServiceName,
  serviceConfigSchema.extend({
    PORT: portVariable(50054),
    /** The wallet, where an admin's campaign funds its promotion budget (with the admin's token). */
    WALLET_URL: z.url().default("http://127.0.0.1:50051"),
    DATABASE_POOL_MAX: poolMaxVariable("discount"),
    /** Assets a campaign may credit; the wallet must know each (WALLET_ASSETS). */
    DISCOUNT_ASSETS: z
      .string()
      .default("COIN,TOMAN")
      .transform((list) => list.split(",").map((a) => a.trim()))
      .pipe(z.array(z.string().regex(/^[A-Z][A-Z0-9]{1,15}$/)).min(1)),
    /** Group commit: redemption requests per claim transaction at most. */
    DISCOUNT_BATCH_MAX: bounded(1, 1_000, 256),
    /** Requests waiting for a batch at most; beyond, a redeem is refused as UNAVAILABLE. */
    DISCOUNT_QUEUE_MAX: bounded(1, 200_000, 20_000),
    /** Redeem attempts per user per minute (any code). */
    DISCOUNT_USER_REDEEMS_PER_MINUTE: bounded(1, 100_000, 20),
    /** Unknown codes per user per hour before that user is slowed down (guessing gift cards). */
    DISCOUNT_USER_UNKNOWN_PER_HOUR: bounded(1, 100_000, 10),
    /**
     * Unknown codes per client address per hour. High by default: a flash crowd behind one
     * carrier NAT shares one address, and only unknown codes count, never successful or
     * exhausted redemptions.
     */
    DISCOUNT_ADDRESS_UNKNOWN_PER_HOUR: bounded(1, 1_000_000, 500),
    /**
     * How often each replica reads its exhausted and watched campaigns again from the database,
     * in case an event that changed them never arrived (it also does so after a NATS reconnect).
     * The longest a replica can refuse a campaign that has slots again.
     */
    DISCOUNT_CACHE_REVALIDATE_MS: bounded(100, 3_600_000, 5_000),
    /** WatchCampaign streams one user may hold open at once, per replica; one more is refused. */
    DISCOUNT_WATCHES_PER_USER: bounded(1, 1_000, 5),
    /** WatchCampaign streams per replica, all users together; beyond, UNAVAILABLE. */
    DISCOUNT_WATCHES_MAX: bounded(1, 1_000_000, 10_000),
    /** The discount service signs no calls; a key given must be its own. */
    SERVICE_KEY_FILE: serviceKeyFileVariable(discountServiceName).optional(),
  }),
);

export type DiscountConfig = z.output<typeof discountConfigSchema>;
