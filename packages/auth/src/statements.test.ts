// Proves signed statements: what the signer signed checks out, and nothing else does: not a
// changed byte, not another purpose, not another service's key, not a token's signature.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { readJwksFile } from "@ovation/config";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ensureKeySet } from "./key-set.ts";
import { createStatementSigner, createStatementVerifier, StatementError } from "./statements.ts";
import { readSigningKey, type SigningKey } from "./tokens.ts";

let directory: string;
let files: Awaited<ReturnType<typeof ensureKeySet>>["files"];

beforeAll(async () => {
  directory = await mkdtemp(path.join(tmpdir(), "ovation-statements-test-"));
  ({ files } = await ensureKeySet(path.join(directory, "keys"), ["card", "order"], "v1"));
});
afterAll(async () => rm(directory, { recursive: true, force: true }));

const payload = new TextEncoder().encode("charge 1000 TOMAN for order 42");
const purpose = "ovation.card.v1.PaymentResult";

describe("signed statements", () => {
  it("verify with the signer's public key and return the signed bytes", async () => {
    const sign = createStatementSigner(await readSigningKey(files.service("card")), purpose);
    const verify = createStatementVerifier(readJwksFile(files.jwks), "card", purpose);
    const statement = await sign(payload);
    expect(statement.keyId).toBe("service:card:v1");
    expect(new TextDecoder().decode(await verify(statement))).toBe("charge 1000 TOMAN for order 42");
  });

  it("refuse a changed payload, another purpose, another signer and a malformed signature", async () => {
    const jwks = readJwksFile(files.jwks);
    const statement = await createStatementSigner(
      await readSigningKey(files.service("card")),
      purpose,
    )(payload);
    const verify = createStatementVerifier(jwks, "card", purpose);
    const tampered = new TextEncoder().encode("charge 9000 TOMAN for order 42");
    await expect(verify({ ...statement, payload: tampered })).rejects.toThrow(StatementError);
    await expect(createStatementVerifier(jwks, "card", "ovation.other.v1.Thing")(statement)).rejects.toThrow(
      /does not match/,
    );
    // The order service signs with its own key: never a card processor's statement.
    const forged = await createStatementSigner(
      await readSigningKey(files.service("order")),
      purpose,
    )(payload);
    await expect(verify(forged)).rejects.toThrow(/not signed by a key of card/);
    await expect(verify({ ...forged, keyId: "service:card:v1" })).rejects.toThrow(/does not match/);
    await expect(verify({ ...statement, signature: statement.signature.slice(1) })).rejects.toThrow(/bytes/);
  });

  it("never sign with the user-token issuer's key", async () => {
    expect(() => createStatementSigner({ kid: "issuer:v1", key: {} as SigningKey["key"] }, purpose)).toThrow(
      /not a service key/,
    );
  });
});
