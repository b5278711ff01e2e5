// JWT signing and verification (jose). HS256 with a shared secret for development and for
// service tokens; a JWKS URL for tokens issued by an identity provider.
import { createRemoteJWKSet, errors, type JWTPayload, jwtVerify, SignJWT } from "jose";
import { type Identity, isRole, type Role } from "./identity.ts";

export interface TokenSettings {
  /** HS256 key, at least 32 characters. Required to sign; verification may use jwksUrl instead. */
  secret?: string | undefined;
  jwksUrl?: string | undefined;
  issuer: string;
  audience: string;
}

export interface TokenClaims {
  subject: string;
  roles: Role[];
  vipLevel?: number;
  /** Lifetime in seconds; 3600 when absent. */
  ttlSeconds?: number;
}

const clockToleranceSeconds = 5;
const maxVipLevel = 100;

export class TokenError extends Error {
  override name = "TokenError";
}

export function createTokenSigner(settings: TokenSettings) {
  if (!settings.secret) throw new TokenError("signing tokens needs JWT_SECRET");
  const key = new TextEncoder().encode(settings.secret);
  return async (claims: TokenClaims): Promise<string> =>
    new SignJWT({ roles: claims.roles, vip_level: claims.vipLevel ?? 0 })
      .setProtectedHeader({ alg: "HS256", typ: "JWT" })
      .setSubject(claims.subject)
      .setIssuer(settings.issuer)
      .setAudience(settings.audience)
      .setIssuedAt()
      .setExpirationTime(`${claims.ttlSeconds ?? 3600}s`)
      .sign(key);
}

export type TokenVerifier = (token: string) => Promise<Identity>;

export function createTokenVerifier(settings: TokenSettings): TokenVerifier {
  const options = {
    issuer: settings.issuer,
    audience: settings.audience,
    clockTolerance: clockToleranceSeconds,
  };
  let verify: (token: string) => Promise<JWTPayload>;
  if (settings.jwksUrl) {
    const keys = createRemoteJWKSet(new URL(settings.jwksUrl));
    verify = async (token) => (await jwtVerify(token, keys, options)).payload;
  } else if (settings.secret) {
    const key = new TextEncoder().encode(settings.secret);
    verify = async (token) => (await jwtVerify(token, key, { ...options, algorithms: ["HS256"] })).payload;
  } else {
    throw new TokenError("verifying tokens needs JWT_SECRET or JWKS_URL");
  }
  const cache = new VerifiedTokenCache();
  return async (token) => {
    const cached = cache.get(token);
    if (cached !== undefined) return cached;
    let payload: JWTPayload;
    try {
      payload = await verify(token);
    } catch (error) {
      if (error instanceof errors.JWTExpired) throw new TokenError("token expired");
      if (error instanceof errors.JOSEError) throw new TokenError(`invalid token: ${error.code}`);
      throw error;
    }
    const identity = identityFromClaims(payload, token);
    cache.set(token, identity, payload.exp);
    return identity;
  };
}

const verifiedTokensMax = 10_000;

/**
 * Remembers verified tokens until they expire, so a service calling with the same token
 * thousands of times a second pays for one HMAC, not one per call. Bounded: when full, the
 * oldest entries go first (Map keeps insertion order).
 */
class VerifiedTokenCache {
  readonly #entries = new Map<string, { identity: Identity; expiresAtMs: number }>();

  get(token: string): Identity | undefined {
    const entry = this.#entries.get(token);
    if (entry === undefined) return undefined;
    if (Date.now() >= entry.expiresAtMs) {
      this.#entries.delete(token);
      return undefined;
    }
    return entry.identity;
  }

  set(token: string, identity: Identity, expSeconds: number | undefined): void {
    if (expSeconds === undefined) return;
    if (this.#entries.size >= verifiedTokensMax) {
      const oldest = this.#entries.keys().next().value;
      if (oldest !== undefined) this.#entries.delete(oldest);
    }
    this.#entries.set(token, { identity, expiresAtMs: expSeconds * 1000 });
  }
}

function identityFromClaims(payload: JWTPayload, token: string): Identity {
  if (typeof payload.sub !== "string" || payload.sub === "" || payload.sub.length > 128) {
    throw new TokenError("invalid token: missing subject");
  }
  const claimedRoles = Array.isArray(payload.roles) ? payload.roles : [];
  const vipLevel = Number(payload.vip_level ?? 0);
  if (!Number.isInteger(vipLevel) || vipLevel < 0 || vipLevel > maxVipLevel) {
    throw new TokenError("invalid token: vip_level");
  }
  return Object.freeze({
    subject: payload.sub,
    roles: new Set(claimedRoles.filter(isRole)),
    vipLevel,
    token,
  });
}

const serviceTokenTtlSeconds = 3600;

/**
 * The token a service presents to other services: a fixed one (SERVICE_TOKEN, for identity
 * providers) or one minted from the shared secret and renewed at half its lifetime.
 */
export function serviceTokenSource(
  name: string,
  settings: TokenSettings,
  fixedToken?: string,
): () => Promise<string> {
  if (fixedToken !== undefined) return async () => fixedToken;
  const sign = createTokenSigner(settings);
  let current: { token: Promise<string>; renewAtMs: number } | undefined;
  return () => {
    if (current === undefined || Date.now() >= current.renewAtMs) {
      current = {
        token: sign({ subject: name, roles: ["service"], ttlSeconds: serviceTokenTtlSeconds }),
        renewAtMs: Date.now() + (serviceTokenTtlSeconds * 1000) / 2,
      };
    }
    return current.token;
  };
}
