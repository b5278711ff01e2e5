// Proves that only tokens signed with our key, for our audience and not expired, yield an
// identity, and that claims are read strictly.
import { SignJWT } from "jose";
import { describe, expect, it } from "vitest";
import { createTokenSigner, createTokenVerifier, TokenError } from "./tokens.ts";

const settings = { secret: "s".repeat(32), issuer: "ovation", audience: "ovation" };
const sign = createTokenSigner(settings);
const verify = createTokenVerifier(settings);

describe("tokens", () => {
  it("round-trips subject, roles and VIP level", async () => {
    const identity = await verify(await sign({ subject: "alice", roles: ["user", "host"], vipLevel: 3 }));
    expect(identity.subject).toBe("alice");
    expect([...identity.roles]).toEqual(["user", "host"]);
    expect(identity.vipLevel).toBe(3);
  });

  it("refuses a token signed with another key", async () => {
    const forged = createTokenSigner({ ...settings, secret: "f".repeat(32) });
    await expect(verify(await forged({ subject: "mallory", roles: ["admin"] }))).rejects.toThrow(TokenError);
  });

  it("refuses an expired token", async () => {
    const key = new TextEncoder().encode(settings.secret);
    const expired = await new SignJWT({ roles: ["user"] })
      .setProtectedHeader({ alg: "HS256" })
      .setSubject("bob")
      .setIssuer("ovation")
      .setAudience("ovation")
      .setExpirationTime(Math.floor(Date.now() / 1000) - 60)
      .sign(key);
    await expect(verify(expired)).rejects.toThrow("token expired");
  });

  it("refuses another audience and drops unknown roles", async () => {
    const other = createTokenSigner({ ...settings, audience: "elsewhere" });
    await expect(verify(await other({ subject: "x", roles: ["user"] }))).rejects.toThrow(TokenError);
    const identity = await verify(await sign({ subject: "y", roles: ["user", "root" as "user"] }));
    expect([...identity.roles]).toEqual(["user"]);
  });
});
