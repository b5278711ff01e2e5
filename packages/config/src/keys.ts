// Key files and key ids. Tokens are signed with Ed25519 (JWS "EdDSA"): whoever holds a private
// key can sign, everyone else only verifies with public keys. A key's id says whose it is, so a
// key can never be used for more than its owner's tokens:
//
//   service:<name>:<version>   the private key held by service <name> alone; signs only
//                              service tokens with sub <name> (enforced by @ovation/auth)
//   anything else              a user-token issuer key (the dev issuer, an identity provider);
//                              its tokens never carry the "service" role
//
// A key id that starts with "service:" but does not follow the pattern is refused everywhere,
// so a typo can never turn a service key into a user-token key.
import { readFileSync, statSync } from "node:fs";
import { z } from "zod";

export const serviceKeyIdPrefix = "service:";
const serviceNamePattern = /^[a-z][a-z0-9-]{0,31}$/;
const keyVersionPattern = /^[A-Za-z0-9._-]{1,64}$/;
const keyIdLengthMax = 128;
/** Far more keys than rotation ever needs at once (old + new per service and issuer). */
const jwksKeysMax = 256;
/** A JWK is ~200 bytes; anything near this size is not a key file. */
const keyFileBytesMax = 256 * 1024;

/** File names written by `./ov keys generate` and looked up through OVATION_KEY_DIR. */
export const keyFileNames = {
  jwks: "jwks.json",
  issuer: "issuer.private.jwk",
  service: (name: string) => `${name}.private.jwk`,
} as const;

/** The identity of the operator commands (`./ov dlq|outbox|replay|ledger`) and tests on NATS. */
export const opsIdentity = "ops";

/** Where `./ov keys generate DIR` puts NATS files, relative to DIR (see nats.ts). */
export const natsKeyFileNames = {
  directory: "nats",
  seed: (identity: string) => `nats/${identity}.nk`,
  /** The nats-server configuration rendered from the public keys (no prefix, for compose). */
  serverConfig: "nats/nats.conf",
  /** Its `authorization` block alone, for servers configured elsewhere (the NATS Helm chart). */
  authorization: "nats/auth.conf",
} as const;

/** "issuer" and "ops" name other key holders, so no service may be called either. */
export const isServiceName = (name: string) =>
  serviceNamePattern.test(name) && name !== "issuer" && name !== opsIdentity;

export function serviceKeyId(service: string, version: string): string {
  if (!isServiceName(service)) throw new Error(`invalid service name ${JSON.stringify(service)}`);
  if (!keyVersionPattern.test(version)) throw new Error(`invalid key version ${JSON.stringify(version)}`);
  return `${serviceKeyIdPrefix}${service}:${version}`;
}

export type KeyOwner = { kind: "service"; service: string; version: string } | { kind: "issuer" };

/** Whom a key id binds its key to; undefined for a malformed id, which nobody may use. */
export function keyOwnerOf(kid: string): KeyOwner | undefined {
  if (kid === "" || kid.length > keyIdLengthMax) return undefined;
  if (!kid.startsWith(serviceKeyIdPrefix)) return { kind: "issuer" };
  const parts = kid.slice(serviceKeyIdPrefix.length).split(":");
  if (parts.length !== 2) return undefined;
  const [service, version] = parts as [string, string];
  if (!isServiceName(service) || !keyVersionPattern.test(version)) return undefined;
  return { kind: "service", service, version };
}

const base64urlOf32Bytes = /^[A-Za-z0-9_-]{43}$/;

const jwkShape = {
  kty: z.literal("OKP", "kty must be OKP (only Ed25519 keys are accepted)"),
  crv: z.literal("Ed25519", "crv must be Ed25519"),
  x: z.string().regex(base64urlOf32Bytes, "x must be 32 bytes of base64url"),
  kid: z.string().refine((kid) => keyOwnerOf(kid) !== undefined, {
    message: `kid must be 1..${keyIdLengthMax} characters; ids starting with "service:" must be service:<name>:<version>`,
  }),
  alg: z.literal("EdDSA", "alg must be EdDSA").optional(),
  use: z.literal("sig", "use must be sig").optional(),
};

/** Only the members that matter, so nothing unexpected (key_ops, x5c, …) travels on. */
const normalized = ({ kty, crv, x, kid }: { kty: "OKP"; crv: "Ed25519"; x: string; kid: string }) => ({
  kty,
  crv,
  x,
  kid,
  alg: "EdDSA" as const,
  use: "sig" as const,
});

const publicJwkSchema = z
  .looseObject(jwkShape)
  // A public key that holds a private part was mixed up with a private key file, and would
  // hand every reader the power to sign.
  .refine((jwk) => !("d" in jwk), "holds a private key (d): publish public keys only")
  .transform(normalized);

export type PublicJwk = z.output<typeof publicJwkSchema>;

const jwksSchema = z.object({
  keys: z
    .array(publicJwkSchema)
    .min(1)
    .max(jwksKeysMax)
    .refine((keys) => new Set(keys.map((key) => key.kid)).size === keys.length, "two keys share one kid"),
});

export type Jwks = z.output<typeof jwksSchema>;

const privateJwkSchema = z
  .looseObject({ ...jwkShape, d: z.string().regex(base64urlOf32Bytes, "d must be 32 bytes of base64url") })
  .transform((jwk) => ({ ...normalized(jwk), d: jwk.d }));

export type PrivateJwk = z.output<typeof privateJwkSchema>;

export class KeyFileError extends Error {
  override name = "KeyFileError";
}

function readJsonFile(file: string): unknown {
  let text: string;
  try {
    const { size } = statSync(file);
    if (size > keyFileBytesMax) throw new KeyFileError(`${file}: larger than ${keyFileBytesMax} bytes`);
    text = readFileSync(file, "utf8");
  } catch (error) {
    if (error instanceof KeyFileError) throw error;
    throw new KeyFileError(`cannot read ${file}: ${(error as NodeJS.ErrnoException).code ?? String(error)}`);
  }
  try {
    return JSON.parse(text);
  } catch {
    throw new KeyFileError(`${file}: not JSON`);
  }
}

function parseWith<Schema extends z.ZodType>(schema: Schema, value: unknown, file: string): z.output<Schema> {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  const issue = result.error.issues[0]!;
  const where = issue.path.length > 0 ? ` at ${issue.path.join(".")}` : "";
  throw new KeyFileError(`${file}${where}: ${issue.message}`);
}

/** The public keys in a JWKS file: Ed25519 only, unique kids, no private parts. */
export const readJwksFile = (file: string): Jwks => parseWith(jwksSchema, readJsonFile(file), file);

/** One private Ed25519 JWK with its kid. */
export const readPrivateKeyFile = (file: string): PrivateJwk =>
  parseWith(privateJwkSchema, readJsonFile(file), file);

/** The public half of a private JWK, as it appears in a JWKS. */
export const publicJwkOf = ({ kty, crv, x, kid, alg, use }: PrivateJwk): PublicJwk => ({
  kty,
  crv,
  x,
  kid,
  alg,
  use,
});

export const parseJwks = (value: unknown, source: string): Jwks => parseWith(jwksSchema, value, source);
export const parsePrivateJwk = (value: unknown, source: string): PrivateJwk =>
  parseWith(privateJwkSchema, value, source);

/** A file variable whose content `read` parses; a bad file is reported as a bad variable. */
export function fileVariable<T>(read: (file: string) => T, description: string) {
  return z
    .string()
    .min(1, description)
    .transform((file, ctx) => {
      try {
        return { file, ...read(file) };
      } catch (error) {
        if (!(error instanceof KeyFileError)) throw error;
        ctx.addIssue({ code: "custom", message: error.message });
        return z.NEVER;
      }
    });
}

/** JWKS_FILE: the public keys of the user-token issuer and of every service. */
export const jwksFileVariable = fileVariable(
  (file) => ({ jwks: readJwksFile(file) }),
  "path of the JWKS file with the public keys of the issuer and of every service",
);

/** SERVICE_KEY_FILE: the private key of `service` itself (kid service:<service>:<version>). */
export const serviceKeyFileVariable = (service: string) =>
  fileVariable((file) => {
    const jwk = readPrivateKeyFile(file);
    const owner = keyOwnerOf(jwk.kid);
    if (owner?.kind !== "service" || owner.service !== service) {
      throw new KeyFileError(
        `${file}: key ${jwk.kid} is not service ${service}'s (want service:${service}:<version>)`,
      );
    }
    return { jwk };
  }, `path of ${service}'s private key file`);

/** TOKEN_ISSUER_KEY_FILE: the private key that signs user tokens (never a service key). */
export const issuerKeyFileVariable = fileVariable((file) => {
  const jwk = readPrivateKeyFile(file);
  if (keyOwnerOf(jwk.kid)?.kind !== "issuer") {
    throw new KeyFileError(`${file}: key ${jwk.kid} is a service key; user tokens need the issuer key`);
  }
  return { jwk };
}, "path of the user-token issuer's private key file");

/** A private key whose public half is not in the JWKS signs tokens that nobody accepts. */
export const isPublishedIn = (jwk: PrivateJwk, jwks: Jwks) =>
  jwks.keys.some((key) => key.kid === jwk.kid && key.x === jwk.x);

/**
 * OVATION_KEY_DIR, for tests and one-machine development: a directory written by
 * `./ov keys generate`. It fills only the key variables that are unset, and only with what this
 * process may hold: the JWKS, its own service key, and the issuer key when `issuer` is true.
 * Production sets the file variables, so that each process can read its own key and no other.
 */
export function keyFilesFromDirectory(
  env: Record<string, string | undefined>,
  service: string,
  issuer: boolean,
): Record<string, string | undefined> {
  const directory = env.OVATION_KEY_DIR;
  if (directory === undefined || directory === "") return env;
  const filled = { ...env };
  const fill = (variable: string, name: string) => {
    const file = `${directory.replace(/\/$/, "")}/${name}`;
    if ((filled[variable] ?? "") === "" && fileExists(file)) filled[variable] = file;
  };
  fill("JWKS_FILE", keyFileNames.jwks);
  fill("SERVICE_KEY_FILE", keyFileNames.service(service));
  fill("NATS_NKEY_FILE", natsKeyFileNames.seed(service));
  if (issuer) fill("TOKEN_ISSUER_KEY_FILE", keyFileNames.issuer);
  return filled;
}

function fileExists(file: string): boolean {
  try {
    return statSync(file).isFile();
  } catch {
    return false;
  }
}
