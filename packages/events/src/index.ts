export * from "./bus.ts";
export * from "./consumer.ts";
export * from "./dlq.ts";
export * from "./ephemeral.ts";
export * from "./names.ts";
export * from "./outbox.ts";
export * from "./service.ts";
export * from "./tables.ts";
