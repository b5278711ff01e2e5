// Structured logs (pino). One root logger per process; requests and messages log through
// children that carry their request or event id.
import { createContextKey, type HandlerContext } from "@connectrpc/connect";
import { type Logger, pino } from "pino";

export type { Logger };

export function createLogger(name: string, level = process.env.LOG_LEVEL ?? "info"): Logger {
  return pino({ name, level, base: { service: name } });
}

export const loggerKey = createContextKey<Logger>(pino({ level: "silent" }), {
  description: "request-scoped logger",
});

export const loggerOf = (ctx: HandlerContext): Logger => ctx.values.get(loggerKey);
