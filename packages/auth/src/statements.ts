// Signed statements: a fact one party states and another checks although it reached them
// through a third, such as the card processor's payment result that travels through the order
// service to the wallet. The middleman can carry the statement but not change or invent it: it
// is signed with the stating service's own Ed25519 key (kid service:<name>:<version>) and
// checked against the public keys of JWKS_FILE only.
//
// The signature covers a purpose string, a zero byte and the payload, so a statement signed
// for one purpose can never pass for another, nor for a token (JWS signs a different input).
import { type Jwks, keyOwnerOf } from "@ovation/config";
import type { CryptoKey } from "jose";
import type { SigningKey } from "./tokens.ts";

export interface SignedStatement {
  /** The exact bytes the signer signed (for example a binary protobuf message). */
  payload: Uint8Array;
  /** The 64-byte Ed25519 signature. */
  signature: Uint8Array;
  /** The signing key's id: service:<signer>:<version>. */
  keyId: string;
}

export class StatementError extends Error {
  override name = "StatementError";
}

/** The statements Ovation's services make, by purpose (also the proto message they sign). */
export const statementPurposes = {
  /** A card processor's payment result (proto ovation.card.v1.SignedPaymentResult). */
  paymentResult: "ovation.card.v1.PaymentResult",
} as const;

const purposePattern = /^[A-Za-z0-9._-]{1,128}$/;
const signatureBytes = 64;

function signedInput(purpose: string, payload: Uint8Array): Uint8Array<ArrayBuffer> {
  const prefix = new TextEncoder().encode(`${purpose}\0`);
  const input = new Uint8Array(prefix.length + payload.length);
  input.set(prefix);
  input.set(payload, prefix.length);
  return input;
}

function checkPurpose(purpose: string): void {
  if (!purposePattern.test(purpose)) throw new Error(`invalid statement purpose ${JSON.stringify(purpose)}`);
}

/** Signs statements of `purpose` with a service's own key. */
export function createStatementSigner(signingKey: SigningKey, purpose: string) {
  checkPurpose(purpose);
  if (keyOwnerOf(signingKey.kid)?.kind !== "service")
    throw new StatementError(`key ${signingKey.kid} is not a service key`);
  return async (payload: Uint8Array): Promise<SignedStatement> => {
    const signature = await crypto.subtle.sign("Ed25519", signingKey.key, signedInput(purpose, payload));
    return { payload, signature: new Uint8Array(signature), keyId: signingKey.kid };
  };
}

/**
 * Checks statements of `purpose` made by service `signer`; returns the payload, or throws a
 * StatementError that says why it does not check out. Public keys are imported once per key id.
 */
export function createStatementVerifier(jwks: Jwks, signer: string, purpose: string) {
  checkPurpose(purpose);
  const keys = new Map<string, Promise<CryptoKey>>();
  for (const jwk of jwks.keys) {
    const owner = keyOwnerOf(jwk.kid);
    if (owner?.kind !== "service" || owner.service !== signer) continue;
    keys.set(
      jwk.kid,
      crypto.subtle.importKey("jwk", { kty: jwk.kty, crv: jwk.crv, x: jwk.x }, "Ed25519", false, ["verify"]),
    );
  }
  return async (statement: SignedStatement): Promise<Uint8Array> => {
    const key = keys.get(statement.keyId);
    if (key === undefined)
      throw new StatementError(
        `not signed by a key of ${signer} (key id ${JSON.stringify(statement.keyId)})`,
      );
    if (statement.signature.length !== signatureBytes)
      throw new StatementError(`the signature is ${statement.signature.length} bytes, not ${signatureBytes}`);
    const valid = await crypto.subtle.verify(
      "Ed25519",
      await key,
      new Uint8Array(statement.signature),
      signedInput(purpose, statement.payload),
    );
    if (!valid) throw new StatementError(`the signature of ${signer} does not match the statement`);
    return statement.payload;
  };
}

export type StatementVerifier = ReturnType<typeof createStatementVerifier>;
export type StatementSigner = ReturnType<typeof createStatementSigner>;
