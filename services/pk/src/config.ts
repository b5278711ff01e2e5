import {
  poolMaxVariable,
  portVariable,
  serviceConfigSchema,
  serviceKeyFileVariable,
  serviceSchema,
  z,
} from "@ovation/config";

/** The PK service's identity: its key id is service:pk:<version>. */
export const pkServiceName = "pk";

const bounded = (min: number, max: number, fallback: number) =>
  z.coerce.number().int().min(min).max(max).default(fallback);

export const pkConfigSchema = serviceSchema(
  pkServiceName,
  serviceConfigSchema.extend({
    PORT: portVariable(50053),
    DATABASE_POOL_MAX: poolMaxVariable("pk"),
    /** The shortest battle a host or admin may ask for (the longest is 1800 s). */
    PK_DURATION_MIN_SECONDS: bounded(1, 1_800, 30),
    /** The shortest bonus round (the longest is 600 s). */
    PK_BONUS_ROUND_MIN_SECONDS: bounded(1, 600, 10),
    /** How long invited hosts have to accept. */
    PK_INVITE_TTL_SECONDS: bounded(1, 3_600, 60),
    /**
     * After a host declined an invitation or let it expire, how long its inviter must wait before
     * inviting that host again: an invitation a host ignores cannot be repeated back to back.
     */
    PK_REINVITE_COOLDOWN_SECONDS: bounded(1, 86_400, 300),
    /**
     * After a battle's time is up, how long to wait before the first settlement check: the time
     * a gift committed just before the end needs to be published and scored.
     */
    PK_SETTLE_DELAY_MS: bounded(0, 60_000, 1_000),
    /**
     * Settlement waits for the scoring consumer to have nothing pending at most this long
     * after the end; then it settles anyway and records why. Gifts still arriving are late.
     */
    PK_SETTLE_GRACE_MS: bounded(1_000, 600_000, 30_000),
    /**
     * Live scores of a battle go out at most once per this interval (100 ms: 10 a second); the
     * last change of a burst goes out when the interval is over.
     */
    PK_LIVE_SCORE_INTERVAL_MS: bounded(10, 60_000, 100),
    /** The PK service calls no other service; a key given must be its own. */
    SERVICE_KEY_FILE: serviceKeyFileVariable(pkServiceName).optional(),
  }),
);

export type PkConfig = z.output<typeof pkConfigSchema>;

/** The battle timings of the PK config. */
export const battleTimings = (config: PkConfig) => ({
  durationMinSeconds: config.PK_DURATION_MIN_SECONDS,
  bonusRoundMinSeconds: config.PK_BONUS_ROUND_MIN_SECONDS,
  inviteTtlSeconds: config.PK_INVITE_TTL_SECONDS,
  reinviteCooldownSeconds: config.PK_REINVITE_COOLDOWN_SECONDS,
  settleDelayMs: config.PK_SETTLE_DELAY_MS,
  settleGraceMs: config.PK_SETTLE_GRACE_MS,
});
