export * from "./identity.ts";
export * from "./interceptor.ts";
export * from "./tokens.ts";
