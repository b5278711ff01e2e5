import {
  poolMaxVariable,
  portVariable,
  serviceConfigSchema,
  serviceKeyFileVariable,
  serviceSchema,
  z,
} from "@ovation/config";

/** The order service's identity: the wallet sees it as "order" (holds, capture, coin packs). */
export const orderServiceName = "order";

export const orderConfigSchema = serviceSchema(
  orderServiceName,
  serviceConfigSchema.extend({
    PORT: portVariable(50055),
    DATABASE_POOL_MAX: poolMaxVariable("order"),
    WALLET_URL: z.url().default("http://127.0.0.1:50051"),
    /** Required: the payment module calls the wallet with service tokens signed by this key. */
    SERVICE_KEY_FILE: serviceKeyFileVariable(orderServiceName),
    /**
     * How long each saga step (reservation, payment) may take before the order fails; at least
     * `stepTimeoutFloorMs`, and by default a little more (`stepTimeoutOf`).
     */
    ORDER_STEP_TIMEOUT_MS: z.coerce.number().int().min(100).max(3_600_000).optional(),
    /** The card processor (services/card): charges, refunds, signed payment results. */
    CARD_URL: z.url().default("http://127.0.0.1:50056"),
  }),
);

export type OrderConfig = z.output<typeof orderConfigSchema>;

/** A process crashed: the time it takes to come back and take its work up again. */
const restartAllowanceMs = 5_000;
/** What the default step deadline adds to its floor, for a slow moment on top of a crash. */
const stepTimeoutMarginMs = 10_000;

type StepTimeoutSettings = Pick<
  OrderConfig,
  "ORDER_STEP_TIMEOUT_MS" | "EVENTS_ACK_WAIT_MS" | "EVENTS_RETRY_BACKOFF_MS" | "SERVICE_CALL_TIMEOUT_MS"
>;

/**
 * The least time a saga step may be given, derived from the redelivery settings: JetStream
 * gives what a crashed process had taken to another after EVENTS_ACK_WAIT_MS, a failing
 * handler is retried after each EVENTS_RETRY_BACKOFF_MS delay, a payment call may run for
 * SERVICE_CALL_TIMEOUT_MS before it is asked again, and a process needs a moment to restart.
 * A shorter deadline fails orders that a crash of one process only delayed.
 */
export function stepTimeoutFloorMs(config: StepTimeoutSettings): number {
  const backoff = config.EVENTS_RETRY_BACKOFF_MS.reduce((sum, ms) => sum + ms, 0);
  return config.EVENTS_ACK_WAIT_MS + backoff + config.SERVICE_CALL_TIMEOUT_MS + restartAllowanceMs;
}

/** The saga's step deadline: as configured, if not below the floor; by default floor + margin. */
export function stepTimeoutOf(config: StepTimeoutSettings): number {
  const floor = stepTimeoutFloorMs(config);
  const configured = config.ORDER_STEP_TIMEOUT_MS;
  if (configured === undefined) return floor + stepTimeoutMarginMs;
  if (configured < floor)
    throw new Error(
      `ORDER_STEP_TIMEOUT_MS=${configured} is below ${floor} ms: EVENTS_ACK_WAIT_MS ` +
        `(${config.EVENTS_ACK_WAIT_MS}) + the EVENTS_RETRY_BACKOFF_MS delays ` +
        `(${config.EVENTS_RETRY_BACKOFF_MS.join(" + ")}) + SERVICE_CALL_TIMEOUT_MS ` +
        `(${config.SERVICE_CALL_TIMEOUT_MS}) + ${restartAllowanceMs} ms to restart; a crash of one ` +
        "process would fail orders it only delayed",
    );
  return configured;
}
