export { Migration } from "@mikro-orm/migrations";
export * from "./database.ts";
export * from "./errors.ts";
