export * from "./identity.ts";
export * from "./interceptor.ts";
export * from "./key-set.ts";
export * from "./statements.ts";
export * from "./tokens.ts";
