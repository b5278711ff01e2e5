// Tokens at the gateway. Every request's bearer token is verified here before any upstream
// call (services verify it again), so a forged or expired token costs one signature check,
// not a hop. No token means anonymous: public routes work, the services refuse the rest. The
// gateway serves people: a service's token (which services accept from each other, inside) is
// refused here, on REST and WebSocket alike, so a leaked service key reaches no public route.
//
// POST /api/auth/token mints tokens for whoever asks: development and demos only, behind
// OVATION_DEV_TOKENS=true, signed with the issuer key. It never mints the "service" role:
// only a service's own key can sign that (and the signer refuses it too).
import { Code } from "@connectrpc/connect";
import {
  anonymous,
  createUserTokenSigner,
  type Identity,
  importSigningKey,
  isService,
  KeySetUnavailableError,
  type TokenClaims,
  TokenError,
  type TokenVerifier,
} from "@ovation/auth";
import { z } from "@ovation/config";
import { badRequest, HttpError } from "./rest/errors.ts";

const bearerPrefix = "bearer ";
/** Tokens we mint are ~300 bytes; anything far larger is not ours and not worth verifying. */
const tokenLengthMax = 4096;
/** When the identity provider's key set is unreachable, a retry soon may well succeed. */
const keySetRetryAfterSeconds = 5;

/** The identity behind an Authorization header; throws 401 for a bad or unusable token. */
export async function identifyBearer(header: string | undefined, verify: TokenVerifier): Promise<Identity> {
  if (header === undefined || header === "") return anonymous;
  if (!header.toLowerCase().startsWith(bearerPrefix)) {
    throw new HttpError(401, Code.Unauthenticated, "authorization must be a Bearer token");
  }
  return identifyToken(header.slice(bearerPrefix.length).trim(), verify);
}

/**
 * The identity a raw token stands for (WebSocket `?token=` or auth message); throws 401 for a bad
 * token and 403 for a service's token.
 */
export async function identifyToken(token: string, verify: TokenVerifier): Promise<Identity> {
  if (token === "" || token.length > tokenLengthMax) {
    throw new HttpError(401, Code.Unauthenticated, "invalid token");
  }
  let identity: Identity;
  try {
    identity = await verify(token);
  } catch (error) {
    if (error instanceof TokenError) throw new HttpError(401, Code.Unauthenticated, error.message);
    if (error instanceof KeySetUnavailableError) {
      throw new HttpError(503, Code.Unavailable, "token keys unavailable", {
        "retry-after": String(keySetRetryAfterSeconds),
      });
    }
    throw error;
  }
  if (isService(identity))
    throw new HttpError(
      403,
      Code.PermissionDenied,
      "service tokens are not accepted here: sign in as a user",
    );
  return identity;
}

const devTokenRequestSchema = z.strictObject({
  userId: z.string().regex(/^[A-Za-z0-9_.@-]{1,128}$/, "1..128 of A-Z, a-z, 0-9 and _ . @ -"),
  roles: z
    .array(z.enum(["user", "host", "admin"]))
    .min(1)
    .max(3)
    .default(["user"]),
  vipLevel: z.number().int().min(0).max(100).default(0),
});

export interface DevTokenResponse {
  token: string;
  /** Seconds until the token expires. */
  expiresIn: number;
}

export type TokenSigner = (claims: TokenClaims) => Promise<string>;

/** The development token signer, when the gateway holds the issuer key (OVATION_DEV_TOKENS). */
export async function devTokenSigner(config: {
  TOKEN_ISSUER_KEY_FILE?: { jwk: Parameters<typeof importSigningKey>[0] } | undefined;
  JWT_ISSUER: string;
  JWT_AUDIENCE: string;
}): Promise<TokenSigner | undefined> {
  const key = config.TOKEN_ISSUER_KEY_FILE;
  if (key === undefined) return undefined;
  return createUserTokenSigner(await importSigningKey(key.jwk), {
    issuer: config.JWT_ISSUER,
    audience: config.JWT_AUDIENCE,
  });
}

/** Handles the body of POST /api/auth/token. */
export async function mintDevToken(body: unknown, sign: TokenSigner, ttlSeconds: number) {
  const parsed = devTokenRequestSchema.safeParse(body ?? {});
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw badRequest(`invalid request: ${issue.path.join(".") || "body"}: ${issue.message}`);
  }
  const { userId, roles, vipLevel } = parsed.data;
  const token = await sign({ subject: userId, roles: [...new Set(roles)], vipLevel, ttlSeconds });
  return { token, expiresIn: ttlSeconds } satisfies DevTokenResponse;
}
