export * from "./clients.ts";
export * from "./health.ts";
export * from "./interceptors.ts";
export * from "./logger.ts";
export * from "./metrics.ts";
export * from "./reflection.ts";
export * from "./server.ts";
export * from "./validation.ts";
