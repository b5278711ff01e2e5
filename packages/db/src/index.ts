export { Migration } from "@mikro-orm/migrations";
export * from "./batcher.ts";
export * from "./database.ts";
export * from "./errors.ts";
export * from "./functions.ts";
export * from "./hosts.ts";
export * from "./locks.ts";
export * from "./socket.ts";
export * from "./statements.ts";
