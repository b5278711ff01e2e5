// JWT signing and verification (jose), Ed25519 ("EdDSA") only. Verifiers hold public keys; a
// private key signs only what its key id allows (the convention is in @ovation/config keys.ts):
//
// - a service key (kid service:<name>:<version>) signs service tokens: sub = iss = <name>,
//   roles exactly ["service"], at most serviceTokenLifetimeMaxSeconds long;
// - any other key is a user-token issuer key: its tokens never carry the "service" role.
//
// Service keys are trusted only from the local JWKS file; JWKS_URL (an identity provider) can
// add user-token keys and nothing else. So a leaked service key cannot act as a user, an admin
// or another service, and the issuer key cannot mint service tokens.
import { type Jwks, keyOwnerOf, type PrivateJwk, readPrivateKeyFile } from "@ovation/config";
import {
  type CryptoKey,
  createLocalJWKSet,
  createRemoteJWKSet,
  decodeProtectedHeader,
  errors,
  importJWK,
  type JWTPayload,
  type JWTVerifyGetKey,
  jwtVerify,
  SignJWT,
} from "jose";
import { type Identity, isRole, type Role } from "./identity.ts";

/** The only signature algorithm accepted or produced: Ed25519. */
export const tokenAlgorithm = "EdDSA";
/** Clock skew tolerated between the signer's clock and ours, for exp, nbf and iat. */
export const clockToleranceSeconds = 5;
/** Service tokens are short-lived: a stolen one is useless within minutes. */
export const serviceTokenTtlSeconds = 300;
/** The longest service token accepted (twice the TTL, so a rolling change of the TTL works). */
export const serviceTokenLifetimeMaxSeconds = 600;
const userTokenTtlDefaultSeconds = 3600;
const maxVipLevel = 100;
const subjectLengthMax = 128;
// An identity provider's key set: fetched at most every cooldown when an unknown kid appears,
// refreshed after the max age, and a slow provider fails the request rather than hanging it.
const jwksFetchTimeoutMs = 5_000;
const jwksCooldownMs = 30_000;
const jwksCacheMaxAgeMs = 600_000;

export interface TokenSettings {
  /** `iss` of user tokens (service tokens are issued by the service itself). */
  issuer: string;
  audience: string;
}

export interface VerifierSettings extends TokenSettings {
  /** Public keys of the user-token issuer and of every service (JWKS_FILE). */
  jwks: Jwks;
  /** An identity provider's key set: more user-token keys, never service keys. */
  jwksUrl?: string | undefined;
}

export interface TokenClaims {
  subject: string;
  roles: Role[];
  vipLevel?: number;
  /** Lifetime in seconds; 3600 when absent. */
  ttlSeconds?: number;
}

export class TokenError extends Error {
  override name = "TokenError";
}

/**
 * The identity provider's key set could not be fetched: the token may be fine, so this is
 * infrastructure trouble (UNAVAILABLE, retry), never a reason to send the user to sign in.
 */
export class KeySetUnavailableError extends Error {
  override name = "KeySetUnavailableError";
}

/** A private key ready to sign, with the key id that says what it may sign. */
export interface SigningKey {
  readonly kid: string;
  readonly key: CryptoKey;
}

export async function importSigningKey(jwk: PrivateJwk): Promise<SigningKey> {
  // Not extractable: code that gets hold of the CryptoKey still cannot export the private key.
  const key = await importJWK(jwk, tokenAlgorithm, { extractable: false });
  if (key instanceof Uint8Array) throw new TokenError(`key ${jwk.kid} is not an Ed25519 private key`);
  return { kid: jwk.kid, key };
}

/** The signing key in a private JWK file (SERVICE_KEY_FILE, TOKEN_ISSUER_KEY_FILE). */
export const readSigningKey = (file: string): Promise<SigningKey> =>
  importSigningKey(readPrivateKeyFile(file));

export type TokenSigner = (claims: TokenClaims) => Promise<string>;

/**
 * Signs user tokens (user, host, admin) with the issuer key: the gateway's development endpoint
 * and the test kit. Refuses service keys and the service role.
 */
export function createUserTokenSigner(signingKey: SigningKey, settings: TokenSettings): TokenSigner {
  if (keyOwnerOf(signingKey.kid)?.kind !== "issuer") {
    throw new TokenError(`key ${signingKey.kid} is a service key and cannot sign user tokens`);
  }
  return async (claims) => {
    if (claims.roles.includes("service")) throw new TokenError("user tokens never carry the service role");
    const now = Math.floor(Date.now() / 1000);
    return new SignJWT({ roles: claims.roles, vip_level: claims.vipLevel ?? 0 })
      .setProtectedHeader({ alg: tokenAlgorithm, typ: "JWT", kid: signingKey.kid })
      .setSubject(claims.subject)
      .setIssuer(settings.issuer)
      .setAudience(settings.audience)
      .setIssuedAt(now)
      .setExpirationTime(now + (claims.ttlSeconds ?? userTokenTtlDefaultSeconds))
      .sign(signingKey.key);
  };
}

/** One service token of `service`, signed with its own key; refuses any other service's key. */
export async function signServiceToken(
  service: string,
  signingKey: SigningKey,
  audience: string,
  ttlSeconds = serviceTokenTtlSeconds,
): Promise<string> {
  const owner = keyOwnerOf(signingKey.kid);
  if (owner?.kind !== "service" || owner.service !== service) {
    throw new TokenError(`key ${signingKey.kid} is not service ${service}'s`);
  }
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ roles: ["service"] })
    .setProtectedHeader({ alg: tokenAlgorithm, typ: "JWT", kid: signingKey.kid })
    .setSubject(service)
    .setIssuer(service)
    .setAudience(audience)
    .setIssuedAt(now)
    .setExpirationTime(now + ttlSeconds)
    .sign(signingKey.key);
}

/**
 * The token a service presents to other services: signed with its own key, renewed at half its
 * lifetime, so callers never send one about to expire.
 */
export function serviceTokenSource(
  service: string,
  signingKey: SigningKey,
  audience: string,
): () => Promise<string> {
  const owner = keyOwnerOf(signingKey.kid);
  if (owner?.kind !== "service" || owner.service !== service) {
    throw new TokenError(`key ${signingKey.kid} is not service ${service}'s`);
  }
  let current: { token: Promise<string>; renewAtMs: number } | undefined;
  return () => {
    if (current === undefined || Date.now() >= current.renewAtMs) {
      const token = signServiceToken(service, signingKey, audience);
      const entry = { token, renewAtMs: Date.now() + (serviceTokenTtlSeconds * 1000) / 2 };
      // A failed signature must not be served until the renewal time: try again next call.
      token.catch(() => {
        if (current === entry) current = undefined;
      });
      current = entry;
    }
    return current.token;
  };
}

export type TokenVerifier = (token: string) => Promise<Identity>;

export function createTokenVerifier(settings: VerifierSettings): TokenVerifier {
  const serviceKeys = localKeySet(settings.jwks, "service");
  const userKeys = userKeyResolver(settings);
  const common = {
    algorithms: [tokenAlgorithm],
    audience: settings.audience,
    clockTolerance: clockToleranceSeconds,
  };
  const verify = async (token: string): Promise<{ identity: Identity; exp: number }> => {
    const owner = keyOwnerOf(keyIdOf(token));
    if (owner === undefined) throw new TokenError("invalid token: malformed key id");
    if (owner.kind === "issuer") {
      const { payload } = await jwtVerify(token, userKeys, {
        ...common,
        issuer: settings.issuer,
        requiredClaims: ["exp", "sub"],
      });
      return { identity: userIdentity(payload, token), exp: payload.exp! };
    }
    if (serviceKeys === undefined) throw new TokenError("invalid token: unknown key");
    const { payload } = await jwtVerify(token, serviceKeys, {
      ...common,
      issuer: owner.service,
      subject: owner.service,
      requiredClaims: ["exp"],
      // Also makes iat required and refuses one from the future.
      maxTokenAge: serviceTokenLifetimeMaxSeconds,
    });
    return { identity: serviceIdentity(payload, owner.service, token), exp: payload.exp! };
  };
  const cache = new VerifiedTokenCache();
  return async (token) => {
    const cached = cache.get(token);
    if (cached !== undefined) return cached;
    let verified: { identity: Identity; exp: number };
    try {
      verified = await verify(token);
    } catch (error) {
      if (error instanceof errors.JWTExpired) throw new TokenError("token expired");
      if (error instanceof errors.JOSEError) throw new TokenError(`invalid token: ${error.code}`);
      throw error;
    }
    cache.set(token, verified.identity, verified.exp);
    return verified.identity;
  };
}

function keyIdOf(token: string): string {
  let kid: unknown;
  try {
    kid = decodeProtectedHeader(token).kid;
  } catch {
    throw new TokenError("invalid token: malformed");
  }
  if (typeof kid !== "string") throw new TokenError("invalid token: no key id");
  return kid;
}

function localKeySet(jwks: Jwks, kind: "service" | "issuer") {
  const keys = jwks.keys.filter((key) => keyOwnerOf(key.kid)?.kind === kind);
  return keys.length === 0 ? undefined : createLocalJWKSet({ keys });
}

/** User-token keys: the local file first, then the identity provider's set. */
function userKeyResolver(settings: VerifierSettings): JWTVerifyGetKey {
  const local = localKeySet(settings.jwks, "issuer");
  const remote =
    settings.jwksUrl === undefined
      ? undefined
      : createRemoteJWKSet(new URL(settings.jwksUrl), {
          timeoutDuration: jwksFetchTimeoutMs,
          cooldownDuration: jwksCooldownMs,
          cacheMaxAge: jwksCacheMaxAgeMs,
        });
  return async (header, token) => {
    if (local !== undefined) {
      try {
        return await local(header, token);
      } catch (error) {
        if (remote === undefined || !(error instanceof errors.JWKSNoMatchingKey)) throw error;
      }
    }
    if (remote === undefined) throw new TokenError("invalid token: unknown key");
    try {
      return await remote(header, token);
    } catch (error) {
      // JOSE errors other than a timeout are about the token or the keys in the set.
      if (error instanceof errors.JOSEError && !(error instanceof errors.JWKSTimeout)) throw error;
      throw new KeySetUnavailableError(`identity provider key set unavailable: ${String(error)}`);
    }
  };
}

function userIdentity(payload: JWTPayload, token: string): Identity {
  const subject = payload.sub ?? "";
  if (subject === "" || subject.length > subjectLengthMax) throw new TokenError("invalid token: subject");
  const claimedRoles: unknown[] = Array.isArray(payload.roles) ? payload.roles : [];
  if (claimedRoles.includes("service")) {
    throw new TokenError("invalid token: a user-token key cannot grant the service role");
  }
  const vipLevel = Number(payload.vip_level ?? 0);
  if (!Number.isInteger(vipLevel) || vipLevel < 0 || vipLevel > maxVipLevel) {
    throw new TokenError("invalid token: vip_level");
  }
  return Object.freeze({ subject, roles: new Set(claimedRoles.filter(isRole)), vipLevel, token });
}

function serviceIdentity(payload: JWTPayload, service: string, token: string): Identity {
  const roles = payload.roles;
  if (!Array.isArray(roles) || roles.length !== 1 || roles[0] !== "service") {
    throw new TokenError("invalid token: a service key signs only service tokens");
  }
  if (payload.exp! - payload.iat! > serviceTokenLifetimeMaxSeconds) {
    throw new TokenError("invalid token: service token lifetime too long");
  }
  return Object.freeze({ subject: service, roles: new Set<Role>(["service"]), vipLevel: 0, token });
}

const verifiedTokensMax = 10_000;

/**
 * Remembers verified tokens until they expire, so a service calling with the same token
 * thousands of times a second pays for one signature check, not one per call. Bounded: when
 * full, the oldest entries go first (Map keeps insertion order).
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

  set(token: string, identity: Identity, expSeconds: number): void {
    if (this.#entries.size >= verifiedTokensMax) {
      const oldest = this.#entries.keys().next().value;
      if (oldest !== undefined) this.#entries.delete(oldest);
    }
    this.#entries.set(token, { identity, expiresAtMs: expSeconds * 1000 });
  }
}
