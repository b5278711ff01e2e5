// Configuration comes from the environment and is validated once, at start-up, so a service
// never runs half-configured. Every bad or missing value is reported in one message, each on
// its own line with the variable's name and what it expects.
import { z } from "zod";

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
 * Settings every service shares. Defaults point at the development infrastructure on this
 * machine; JWT_SECRET has none on purpose: a service must never start with a guessable key.
 */
export const serviceConfigSchema = z.object({
  DATABASE_URL: z.url({ protocol: /^postgres(ql)?$/ }).default("postgres://postgres@127.0.0.1:5432/ovation"),
  NATS_URL: z.string().min(1).default("nats://127.0.0.1:4222"),
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
  HOST: z.string().default("127.0.0.1"),
  /** Delays before the 1st, 2nd and 3rd retry of a failed event (then the DLQ). */
  EVENTS_RETRY_BACKOFF_MS: z
    .string()
    .default("1000,4000,16000")
    .transform((list) => list.split(",").map(Number))
    .pipe(z.array(z.number().int().min(10).max(3_600_000)).length(3, "three delays, comma separated")),
  /** How long a delivery may stay unacknowledged (a crashed worker) before redelivery. */
  EVENTS_ACK_WAIT_MS: z.coerce.number().int().min(100).max(600_000).default(30_000),
  /** Bearer token this service presents to others; minted from JWT_SECRET when absent. */
  SERVICE_TOKEN: z.string().min(1).optional(),
  LOG_LEVEL: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]).default("info"),
  JWT_SECRET: z.string().min(32, "at least 32 characters (HS256 key)").optional(),
  JWKS_URL: z.url().optional(),
  JWT_ISSUER: z.string().default("ovation"),
  JWT_AUDIENCE: z.string().default("ovation"),
});

export type ServiceConfig = z.output<typeof serviceConfigSchema>;

/** Services verify tokens, so they need a key: JWT_SECRET (HS256) or JWKS_URL. */
export const hasTokenKey: [
  (config: { JWT_SECRET?: string | undefined; JWKS_URL?: string | undefined }) => boolean,
  { message: string; path: string[] },
] = [
  (config) => config.JWT_SECRET !== undefined || config.JWKS_URL !== undefined,
  { message: "set JWT_SECRET (32+ characters) or JWKS_URL", path: ["JWT_SECRET"] },
];

/** A port variable with a default, for example `portVariable(50051)`. */
export const portVariable = (fallback: number) => port.default(fallback);

export { z };
