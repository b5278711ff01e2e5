export * from "./identity.ts";
export * from "./interceptor.ts";
export * from "./key-set.ts";
export * from "./tokens.ts";
