// Proves configuration errors name every bad variable at once and defaults apply.
import { describe, expect, it } from "vitest";
import { ConfigError, loadConfig, portVariable, serviceConfigSchema, z } from "./index.ts";

describe("loadConfig", () => {
  it("applies defaults for the development infrastructure", () => {
    const config = loadConfig(serviceConfigSchema, { JWT_SECRET: "x".repeat(32) });
    expect(config.NATS_URL).toBe("nats://127.0.0.1:4222");
    expect(config.OVATION_PREFIX).toBe("");
  });

  it("lists every invalid variable in one error", () => {
    const schema = serviceConfigSchema.extend({ PORT: portVariable(1), REQUIRED_THING: z.string() });
    const env = { DATABASE_URL: "mysql://nope", OVATION_PREFIX: "Bad.Prefix", PORT: "99999" };
    expect(() => loadConfig(schema, env)).toThrow(ConfigError);
    try {
      loadConfig(schema, env);
    } catch (error) {
      const message = (error as Error).message;
      expect(message).toContain("DATABASE_URL: invalid");
      expect(message).toContain("OVATION_PREFIX: invalid");
      expect(message).toContain("PORT: invalid");
      expect(message).toContain("REQUIRED_THING: missing");
    }
  });
});
