// Configuration comes from the environment and is validated once, at start-up, so a service
// never runs half-configured. Every bad or missing value is reported in one message, each on
// its own line with the variable's name and what it expects.
import { z } from "zod";
import {
  isPublishedIn,
  type Jwks,
  jwksFileVariable,
  keyFilesFromDirectory,
  type PrivateJwk,
} from "./keys.ts";
import { natsNkeyFileVariable, refuseRemoteAnonymousNats } from "./nats.ts";
import { databaseUrl } from "./urls.ts";

export * from "./keys.ts";
export * from "./nats.ts";
export * from "./urls.ts";

export class ConfigError extends Error {
  override name = "ConfigError";
}

/** Parses `env` with `schema`; throws one ConfigError that lists every problem. */
export function loadConfig<Schema extends z.ZodType>(
  schema: Schema,
  env: Record<string, string | undefined> = process.env,
): z.output<Schema> {
  const result = schema.safeParse(env);
  if (result.success) return result.data;
  const lines = result.error.issues.map((issue) => {
    const name = issue.path.join(".") || "(environment)";
    const value = env[String(issue.path[0])];
    return `  - ${name}: ${value === undefined ? "missing" : "invalid"}: ${issue.message}`;
  });
  throw new ConfigError(`invalid configuration:\n${lines.join("\n")}`);
}

const port = z.coerce.number().int().min(0).max(65_535);

/**
 * The connection budget (decision 0043, README "Configuration"): each service's default
 * DATABASE_POOL_MAX, and its PgBouncer pool's server connections, shared by all its replicas.
 * Sized from `./ov bench e2e` and the cluster soak: below these, sends per second dropped; above
 * them, connections waited on Postgres's WAL flush, not on the pool. Every process that LISTENs
 * has one more, direct (`sharedListener`).
 */
export const connectionBudget = {
  wallet: 8,
  gift: 8,
  pk: 6,
  discount: 6,
  order: 6,
  card: 4,
  gateway: 4,
} as const satisfies Record<string, number>;

/** `DATABASE_POOL_MAX` of `service`: its share of the budget unless set (2..200). */
export const poolMaxVariable = (service: keyof typeof connectionBudget) =>
  z.coerce.number().int().min(2).max(200).default(connectionBudget[service]);

/**
 * What every process that touches the infrastructure needs (services and operator commands).
 * Defaults point at the development infrastructure on this machine.
 */
export const infrastructureConfigSchema = z.object({
  /** One host, or several with `target_session_attrs=read-write` for a Postgres that fails over. */
  DATABASE_URL: databaseUrl().default("postgres://postgres@127.0.0.1:5432/ovation"),
  /**
   * The same database without a pooler in between, for what a transaction-mode pooler cannot
   * carry: the process's LISTEN connection and session advisory locks (the start-up schema lock,
   * a replay's lock). Unset: DATABASE_URL is direct, and serves both (decision 0043).
   */
  DATABASE_DIRECT_URL: databaseUrl().optional(),
  /** One server or a comma-separated list (`nats://host:port` or `host:port`). */
  NATS_URL: z.string().min(1).default("nats://127.0.0.1:4222"),
  /**
   * This process's NATS nkey seed (its identity on the bus). Optional only while every server
   * in NATS_URL is on this machine; services refuse a remote NATS without it (serviceSchema,
   * operatorSchema).
   */
  NATS_NKEY_FILE: natsNkeyFileVariable.optional(),
  /** Isolates a deployment (or a test run) on shared servers: prefixes stream names and subjects. */
  OVATION_PREFIX: z
    .string()
    .regex(/^[a-z0-9]*$/, "lower-case letters and digits only (used in stream names and subjects)")
    .max(24)
    .default(""),
  /** Byte limit of each JetStream stream (JetStream reserves it on disk up front). */
  NATS_STREAM_MAX_BYTES: z.coerce
    .number()
    .int()
    .min(1024 * 1024)
    .default(1024 ** 3),
  /**
   * Replicas of every stream this process creates or owns (durable consumers follow their
   * stream's): 1 on one nats-server, 3 on a JetStream cluster (decision 0042). JetStream refuses
   * more replicas than the cluster has servers.
   */
  NATS_REPLICAS: z.coerce.number().int().min(1).max(5).default(1),
  /**
   * Database timeouts of every connection of the process's pool, so that nothing waits forever:
   * a statement, a wait for a lock (a blocked batch answers UNAVAILABLE and frees its slot), and
   * a transaction left idle (its locks go back to the others).
   */
  DATABASE_STATEMENT_TIMEOUT_MS: z.coerce.number().int().min(100).max(3_600_000).default(30_000),
  DATABASE_LOCK_TIMEOUT_MS: z.coerce.number().int().min(10).max(600_000).default(5_000),
  DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_MS: z.coerce.number().int().min(100).max(3_600_000).default(15_000),
  HOST: z.string().default("127.0.0.1"),
  /** Delays before the 1st, 2nd and 3rd retry of a failed event (then the DLQ). */
  EVENTS_RETRY_BACKOFF_MS: z
    .string()
    .default("1000,4000,16000")
    .transform((list) => list.split(",").map(Number))
    .pipe(z.array(z.number().int().min(10).max(3_600_000)).length(3, "three delays, comma separated")),
  /** How long a delivery may stay unacknowledged (a crashed worker) before redelivery. */
  EVENTS_ACK_WAIT_MS: z.coerce.number().int().min(100).max(600_000).default(30_000),
  /**
   * The outbox relay's safety-net poll: commits in its own process and NOTIFYs wake it at once;
   * this bounds the rest (a dead relay's lease, a writer with no relay) (0035).
   */
  OUTBOX_POLL_INTERVAL_MS: z.coerce.number().int().min(100).max(600_000).default(5_000),
  /**
   * The job runner's safety-net poll: jobs due now are announced, jobs this process schedules
   * for later wake it at their time; this bounds timers set by other processes (0035).
   */
  JOBS_POLL_INTERVAL_MS: z.coerce.number().int().min(100).max(600_000).default(5_000),
  LOG_LEVEL: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]).default("info"),
});

const loopbackHosts = new Set(["localhost", "127.0.0.1", "[::1]"]);

/**
 * Settings every service shares: the infrastructure, and the public keys it verifies tokens
 * with. There is no default key and no shared secret: a service holds public keys, plus at
 * most its own private key (SERVICE_KEY_FILE, declared by the services that sign).
 */
export const serviceConfigSchema = infrastructureConfigSchema.extend({
  JWKS_FILE: jwksFileVariable,
  /** More user-token keys, from an identity provider; never trusted for service keys. */
  JWKS_URL: z
    .url({ protocol: /^https?$/ })
    .refine(
      (url) => url.startsWith("https:") || loopbackHosts.has(new URL(url).hostname),
      "https only (http only on localhost): a forged key set would let anyone sign user tokens",
    )
    .optional(),
  JWT_ISSUER: z.string().min(1).default("ovation"),
  JWT_AUDIENCE: z.string().min(1).default("ovation"),
  /** Read by keyFilesFromDirectory before validation; kept here so it is documented in one place. */
  OVATION_KEY_DIR: z.string().optional(),
  /** Run the durable consumers and timers here (false: an API-only replica). */
  RUN_CONSUMERS: z.stringbool().default(true),
  /** Deadline of every call to another service; past it, the outcome is unknown and asked again. */
  SERVICE_CALL_TIMEOUT_MS: z.coerce.number().int().min(100).max(120_000).default(10_000),
});

export type ServiceConfig = z.output<typeof serviceConfigSchema>;

/** What a service's token verifier needs (createTokenVerifier in @ovation/auth), from its config. */
export const tokenVerifierSettings = (
  config: Pick<ServiceConfig, "JWKS_FILE" | "JWKS_URL" | "JWT_ISSUER" | "JWT_AUDIENCE">,
) => ({
  jwks: config.JWKS_FILE.jwks,
  jwksUrl: config.JWKS_URL,
  issuer: config.JWT_ISSUER,
  audience: config.JWT_AUDIENCE,
});

type KeyVariables = {
  NATS_URL: string;
  NATS_NKEY_FILE?: { file: string; seed: Uint8Array } | undefined;
  JWKS_FILE: { jwks: Jwks };
  SERVICE_KEY_FILE?: { file: string; jwk: PrivateJwk } | undefined;
  TOKEN_ISSUER_KEY_FILE?: { file: string; jwk: PrivateJwk } | undefined;
};

export interface ServiceSchemaOptions {
  /** True when this service may hold the user-token issuer key (the gateway with dev tokens). */
  issuer?: (env: Record<string, string | undefined>) => boolean;
  /** False for a service that never connects to NATS (the card processor). Default true. */
  bus?: boolean;
}

/**
 * The final schema of service `name`: OVATION_KEY_DIR fills its unset key files (the issuer key
 * only when `options.issuer(env)` is true, its NATS seed nats/<name>.nk), each private key it
 * holds must be published in its JWKS_FILE, or it would sign tokens that no service accepts,
 * and it may connect to NATS anonymously only when NATS is on this machine.
 */
export function serviceSchema<Schema extends z.ZodType<KeyVariables>>(
  name: string,
  schema: Schema,
  options: ServiceSchemaOptions = {},
) {
  const issuer = options.issuer ?? (() => false);
  const published = schema.superRefine((config, ctx) => {
    if (options.bus !== false) refuseRemoteAnonymousNats(config, ctx);
    for (const variable of ["SERVICE_KEY_FILE", "TOKEN_ISSUER_KEY_FILE"] as const) {
      const key = config[variable];
      if (key === undefined || isPublishedIn(key.jwk, config.JWKS_FILE.jwks)) continue;
      ctx.addIssue({
        code: "custom",
        path: [variable],
        message: `key ${key.jwk.kid} is not in JWKS_FILE: publish its public key to every service first`,
      });
    }
  });
  return z.preprocess(
    (env) => keyFilesFromDirectory(env as Record<string, string | undefined>, name, issuer(env as never)),
    published,
  );
}

/** A port variable with a default, for example `portVariable(50051)`. */
export const portVariable = (fallback: number) => port.default(fallback);

export { z };
