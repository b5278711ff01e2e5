// Proves that a token is accepted only when a key we publish signed it, within what that key's
// id allows: a leaked service key cannot act as a user, an admin or another service; the
// issuer key cannot mint service tokens; HS256, "none", unknown keys, missing or past `exp`
// and lifetimes beyond the service maximum are refused; service keys never come from JWKS_URL.
import { createServer, type Server } from "node:http";
import net from "node:net";
import { publicJwkOf, serviceKeyId } from "@ovation/config";
import { type JWTPayload, SignJWT } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generatePrivateJwk, issuerKeyId } from "./key-set.ts";
import {
  clockToleranceSeconds,
  createTokenVerifier,
  createUserTokenSigner,
  importSigningKey,
  KeySetUnavailableError,
  type SigningKey,
  serviceTokenLifetimeMaxSeconds,
  serviceTokenSource,
  signServiceToken,
  TokenError,
  type TokenVerifier,
} from "./tokens.ts";

const settings = { issuer: "ovation", audience: "ovation" };
const issuerJwk = generatePrivateJwk(issuerKeyId("v1"));
const giftJwk = generatePrivateJwk(serviceKeyId("gift", "v1"));
const walletJwk = generatePrivateJwk(serviceKeyId("wallet", "v1"));
const jwks = { keys: [issuerJwk, giftJwk, walletJwk].map(publicJwkOf) };
const verify = createTokenVerifier({ ...settings, jwks });
let issuerKey: SigningKey;
let giftKey: SigningKey;

beforeAll(async () => {
  issuerKey = await importSigningKey(issuerJwk);
  giftKey = await importSigningKey(giftJwk);
});

const now = () => Math.floor(Date.now() / 1000);

/** A token with exactly these claims and header, signed with `key`: what an attacker can make. */
async function craft(
  key: SigningKey,
  claims: JWTPayload,
  header: { alg?: string; kid?: string } = {},
): Promise<string> {
  return new SignJWT(claims).setProtectedHeader({ alg: "EdDSA", kid: key.kid, ...header }).sign(key.key);
}

const serviceClaims = (service: string, extra: JWTPayload = {}): JWTPayload => ({
  sub: service,
  iss: service,
  aud: "ovation",
  roles: ["service"],
  iat: now(),
  exp: now() + 60,
  ...extra,
});

const refused = (token: Promise<string> | string, verifier: TokenVerifier = verify) =>
  expect(Promise.resolve(token).then(verifier)).rejects.toThrow(TokenError);

describe("user tokens", () => {
  it("round-trip subject, roles and VIP level, signed by the issuer key", async () => {
    const sign = createUserTokenSigner(issuerKey, settings);
    const identity = await verify(await sign({ subject: "alice", roles: ["user", "host"], vipLevel: 3 }));
    expect(identity.subject).toBe("alice");
    expect([...identity.roles]).toEqual(["user", "host"]);
    expect(identity.vipLevel).toBe(3);
  });

  it("the issuer key cannot mint a service token, through the signer or by hand", async () => {
    const sign = createUserTokenSigner(issuerKey, settings);
    await expect(sign({ subject: "gift", roles: ["service"] })).rejects.toThrow(
      "never carry the service role",
    );
    const forged = craft(issuerKey, { ...serviceClaims("gift"), iss: "ovation" });
    await expect(forged.then(verify)).rejects.toThrow("cannot grant the service role");
    await refused(
      craft(issuerKey, { ...serviceClaims("gift"), iss: "ovation", roles: ["admin", "service"] }),
    );
  });

  it("a service key cannot sign user tokens", async () => {
    expect(() => createUserTokenSigner(giftKey, settings)).toThrow(TokenError);
  });

  it("refuses another audience or issuer, and drops unknown roles", async () => {
    const base = { sub: "x", roles: ["user"], iat: now(), exp: now() + 60 };
    await refused(craft(issuerKey, { ...base, iss: "ovation", aud: "elsewhere" }));
    await refused(craft(issuerKey, { ...base, iss: "gift", aud: "ovation" }));
    const identity = await verify(
      await craft(issuerKey, { ...base, iss: "ovation", aud: "ovation", roles: ["user", "root"] }),
    );
    expect([...identity.roles]).toEqual(["user"]);
  });
});

describe("service tokens", () => {
  it("carry the verified service name as subject and only the service role", async () => {
    const token = serviceTokenSource("gift", giftKey, "ovation");
    const identity = await verify(await token());
    expect(identity.subject).toBe("gift");
    expect([...identity.roles]).toEqual(["service"]);
    expect(await token()).toBe(await token());
  });

  it("a leaked service key claiming admin, user or extra roles is refused", async () => {
    await refused(craft(giftKey, serviceClaims("gift", { roles: ["admin"] })));
    await refused(craft(giftKey, serviceClaims("gift", { roles: ["user"] })));
    await refused(craft(giftKey, serviceClaims("gift", { roles: ["service", "admin"] })));
    await refused(craft(giftKey, serviceClaims("gift", { roles: [] })));
    // A human's name with a service key: still refused.
    await refused(craft(giftKey, serviceClaims("gift", { sub: "root", roles: ["admin"] })));
  });

  it("a leaked service key cannot speak for another service", async () => {
    await refused(craft(giftKey, serviceClaims("wallet")));
    await refused(craft(giftKey, serviceClaims("gift", { sub: "wallet" })));
    await refused(craft(giftKey, serviceClaims("gift", { iss: "wallet" })));
    // Claiming the other service's key id does not help: that key did not sign it.
    await refused(craft(giftKey, serviceClaims("wallet"), { kid: serviceKeyId("wallet", "v1") }));
    expect(() => serviceTokenSource("wallet", giftKey, "ovation")).toThrow(TokenError);
    await expect(signServiceToken("wallet", giftKey, "ovation")).rejects.toThrow(TokenError);
  });

  it("refuses lifetimes beyond the service maximum and tokens issued in the future", async () => {
    const long = serviceTokenLifetimeMaxSeconds + 60;
    await refused(craft(giftKey, serviceClaims("gift", { exp: now() + long })));
    await refused(craft(giftKey, serviceClaims("gift", { iat: now() + 120, exp: now() + 180 })));
    await refused(craft(giftKey, serviceClaims("gift", { iat: undefined })));
  });
});

describe("refused whoever signs", () => {
  it("a token without exp", async () => {
    await refused(craft(issuerKey, { sub: "bob", iss: "ovation", aud: "ovation", roles: ["user"] }));
    await refused(craft(giftKey, serviceClaims("gift", { exp: undefined })));
  });

  it("an expired token beyond the tolerance, but not one within it", async () => {
    const claims = { sub: "bob", iss: "ovation", aud: "ovation", roles: ["user"], iat: now() - 600 };
    const expired = craft(issuerKey, { ...claims, exp: now() - clockToleranceSeconds - 5 });
    await expect(expired.then(verify)).rejects.toThrow("token expired");
    const withinSkew = await craft(issuerKey, { ...claims, exp: now() - 1 });
    expect((await verify(withinSkew)).subject).toBe("bob");
  });

  it("HS256 and alg none, even naming a published key", async () => {
    const claims = { sub: "root", iss: "ovation", aud: "ovation", roles: ["admin"], exp: now() + 60 };
    // The classic confusion attack: the public key's bytes used as an HMAC secret.
    const hs256 = await new SignJWT(claims)
      .setProtectedHeader({ alg: "HS256", kid: issuerJwk.kid })
      .sign(new TextEncoder().encode(issuerJwk.x));
    await expect(verify(hs256)).rejects.toThrow("ERR_JOSE_ALG_NOT_ALLOWED");
    const encode = (value: object) => Buffer.from(JSON.stringify(value)).toString("base64url");
    const none = `${encode({ alg: "none", kid: issuerJwk.kid })}.${encode(claims)}.`;
    await refused(none);
  });

  it("a key that is not published, or a malformed or missing key id", async () => {
    const strangerIssuer = await importSigningKey(generatePrivateJwk(issuerKeyId("v1")));
    const claims = { sub: "root", iss: "ovation", aud: "ovation", roles: ["admin"], exp: now() + 60 };
    await refused(craft(strangerIssuer, claims));
    await refused(craft(strangerIssuer, claims, { kid: "issuer:other" }));
    const strangerGift = await importSigningKey(generatePrivateJwk(serviceKeyId("gift", "v2")));
    await refused(signServiceToken("gift", strangerGift, "ovation"));
    await expect(craft(giftKey, serviceClaims("gift"), { kid: "service:gift" }).then(verify)).rejects.toThrow(
      "malformed key id",
    );
    const noKid = await new SignJWT(claims).setProtectedHeader({ alg: "EdDSA" }).sign(issuerKey.key);
    await expect(verify(noKid)).rejects.toThrow("no key id");
    await expect(verify("not.a.jwt")).rejects.toThrow("malformed");
  });
});

describe("identity provider keys (JWKS_URL)", () => {
  const providerJwk = generatePrivateJwk("provider-2026");
  // A provider that is compromised, or just misconfigured, publishes a key in a service's name.
  const rogueServiceJwk = generatePrivateJwk(serviceKeyId("gift", "rogue"));
  let server: Server;
  let viaProvider: TokenVerifier;

  beforeAll(async () => {
    const body = JSON.stringify({ keys: [providerJwk, rogueServiceJwk].map(publicJwkOf) });
    server = createServer((_, response) =>
      response.writeHead(200, { "content-type": "application/json" }).end(body),
    );
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const { port } = server.address() as { port: number };
    viaProvider = createTokenVerifier({ ...settings, jwks, jwksUrl: `http://127.0.0.1:${port}/jwks.json` });
  });
  afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

  it("add user-token keys, but are never trusted for service tokens", async () => {
    const provider = await importSigningKey(providerJwk);
    const user = await craft(provider, {
      sub: "carol",
      iss: "ovation",
      aud: "ovation",
      roles: ["user"],
      exp: now() + 60,
    });
    expect((await viaProvider(user)).subject).toBe("carol");
    await refused(craft(provider, { ...serviceClaims("gift"), iss: "ovation" }), viaProvider);
    const rogue = await importSigningKey(rogueServiceJwk);
    await refused(signServiceToken("gift", rogue, "ovation"), viaProvider);
    // The local keys still work beside the provider's.
    expect((await viaProvider(await signServiceToken("gift", giftKey, "ovation"))).subject).toBe("gift");
  });

  it("an unreachable provider is infrastructure trouble, not a bad token", async () => {
    const closed = net.createServer();
    await new Promise<void>((resolve) => closed.listen(0, "127.0.0.1", resolve));
    const { port } = closed.address() as { port: number };
    await new Promise((resolve) => closed.close(resolve));
    const unreachable = createTokenVerifier({
      ...settings,
      jwks,
      jwksUrl: `http://127.0.0.1:${port}/jwks.json`,
    });
    const provider = await importSigningKey(providerJwk);
    const user = await craft(provider, {
      sub: "carol",
      iss: "ovation",
      aud: "ovation",
      roles: ["user"],
      exp: now() + 60,
    });
    await expect(unreachable(user)).rejects.toThrow(KeySetUnavailableError);
    // Tokens of local keys do not depend on the provider.
    const local = createUserTokenSigner(issuerKey, settings);
    expect((await unreachable(await local({ subject: "dave", roles: ["user"] }))).subject).toBe("dave");
  });
});
