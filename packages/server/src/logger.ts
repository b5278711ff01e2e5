// Structured logs (pino). One root logger per process; requests and messages log through
// children that carry their request or event id.
import { createContextKey, type HandlerContext } from "@connectrpc/connect";
import { type Logger, pino } from "pino";

export type { Logger };

export function createLogger(name: string, level = process.env.LOG_LEVEL ?? "info"): Logger {
  return pino({ name, level, base: { service: name } });
}

const silent = pino({ level: "silent" });

/**
 * The request-scoped logger, made on first use: most calls never log, and a pino child (with a
 * request id to make) for each of thousands of calls a second showed in profiles.
 */
export const loggerKey = createContextKey<() => Logger>(() => silent, {
  description: "request-scoped logger, made on first use",
});

export const loggerOf = (ctx: HandlerContext): Logger => ctx.values.get(loggerKey)();
