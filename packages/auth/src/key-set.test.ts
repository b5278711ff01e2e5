// Proves key sets on disk: private keys readable by their owner only, a JWKS of public halves,
// reruns that never replace a key, and a rotation (add, switch, retire) during which tokens of
// both keys verify and after which the old key's tokens are refused; and a NATS nkey seed per
// service and for ops, readable by its owner only, whose public keys the server gets.
import { copyFile, mkdtemp, readFile, rename, rm, stat, unlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { readJwksFile } from "@ovation/config";
import { afterEach, describe, expect, it } from "vitest";
import { ensureKeySet, nextKeyFile, readNatsPublicKeys, retireKey, rotateKey } from "./key-set.ts";
import { createTokenVerifier, readSigningKey, signServiceToken, TokenError } from "./tokens.ts";

const directories: string[] = [];
afterEach(async () => {
  for (const directory of directories.splice(0)) await rm(directory, { recursive: true, force: true });
});
async function keyDirectory(): Promise<string> {
  const directory = await mkdtemp(path.join(tmpdir(), "ovation-key-set-test-"));
  directories.push(directory);
  return path.join(directory, "keys");
}

const kidsIn = (file: string) => readJwksFile(file).keys.map((key) => key.kid);
const verifierFor = (jwksFile: string) =>
  createTokenVerifier({ issuer: "ovation", audience: "ovation", jwks: readJwksFile(jwksFile) });

describe("ensureKeySet", () => {
  it("writes one private key per owner, readable by the owner only, and publishes their public halves", async () => {
    const { files, created } = await ensureKeySet(await keyDirectory(), ["wallet", "gift"], "v1");
    expect(created).toEqual(["issuer:v1", "service:wallet:v1", "service:gift:v1"]);
    expect(kidsIn(files.jwks)).toEqual(created);
    expect(await readFile(files.jwks, "utf8")).not.toContain('"d"');
    for (const file of [files.issuer, files.service("wallet"), files.service("gift")]) {
      expect((await stat(file)).mode & 0o777).toBe(0o600);
    }
    expect((await stat(files.directory)).mode & 0o777).toBe(0o700);
  });

  it("keeps every existing key on a rerun and adds only what is missing", async () => {
    const directory = await keyDirectory();
    const { files } = await ensureKeySet(directory, ["gift"], "v1");
    const giftKey = await readFile(files.service("gift"), "utf8");
    expect((await ensureKeySet(directory, ["gift"], "v2")).created).toEqual([]);
    expect((await ensureKeySet(directory, ["gift", "order"], "v3")).created).toEqual(["service:order:v3"]);
    expect(await readFile(files.service("gift"), "utf8")).toBe(giftKey);
    expect(kidsIn(files.jwks)).toEqual(["issuer:v1", "service:gift:v1", "service:order:v3"]);
  });

  it("refuses a key file that holds another owner's key", async () => {
    const directory = await keyDirectory();
    const { files } = await ensureKeySet(directory, ["gift", "wallet"], "v1");
    await copyFile(files.service("wallet"), files.service("gift"));
    await expect(ensureKeySet(directory, ["gift", "wallet"])).rejects.toThrow(
      "expected a key like service:gift",
    );
  });
});

describe("NATS seeds", () => {
  it("writes one user seed per service and for ops, owner-only, never replaced, and gives their public keys", async () => {
    const directory = await keyDirectory();
    const { files, natsCreated } = await ensureKeySet(directory, ["wallet", "gift"], "v1");
    expect(natsCreated).toEqual(["wallet", "gift", "ops"]);
    for (const identity of natsCreated) {
      expect(await readFile(files.natsSeed(identity), "utf8")).toMatch(/^SU[A-Z2-7]{56}\n$/);
      expect((await stat(files.natsSeed(identity))).mode & 0o777).toBe(0o600);
    }
    expect((await stat(path.dirname(files.natsSeed("ops")))).mode & 0o777).toBe(0o700);
    const seed = await readFile(files.natsSeed("gift"), "utf8");
    const publicKeys = readNatsPublicKeys(directory, ["wallet", "gift", "ops"]);
    expect([...publicKeys.values()].every((key) => /^U[A-Z2-7]{55}$/.test(key))).toBe(true);
    expect(new Set(publicKeys.values()).size).toBe(3);

    await unlink(files.natsSeed("wallet"));
    expect((await ensureKeySet(directory, ["wallet", "gift", "pk"], "v2")).natsCreated).toEqual([
      "wallet",
      "pk",
    ]);
    expect(await readFile(files.natsSeed("gift"), "utf8")).toBe(seed);
    expect(readNatsPublicKeys(directory, ["gift"]).get("gift")).toBe(publicKeys.get("gift"));

    await writeFile(files.natsSeed("pk"), "not a seed");
    await expect(ensureKeySet(directory, ["pk"])).rejects.toThrow("not a NATS user nkey seed");
  });
});

describe("rotation", () => {
  it("accepts both keys while they overlap, and only the new one once the old is retired", async () => {
    const directory = await keyDirectory();
    const { files } = await ensureKeySet(directory, ["gift"], "v1");
    const oldToken = await signServiceToken("gift", await readSigningKey(files.service("gift")), "ovation");

    expect(await rotateKey(directory, "gift", "v2")).toBe("service:gift:v2");
    await expect(rotateKey(directory, "gift", "v3")).rejects.toThrow("finish that rotation first");
    const overlap = verifierFor(files.jwks);
    const newToken = await signServiceToken(
      "gift",
      await readSigningKey(nextKeyFile(files.service("gift"))),
      "ovation",
    );
    expect((await overlap(oldToken)).subject).toBe("gift");
    expect((await overlap(newToken)).subject).toBe("gift");

    await expect(retireKey(directory, "service:gift:v1")).rejects.toThrow("switch to its new key first");
    await rename(nextKeyFile(files.service("gift")), files.service("gift"));
    await retireKey(directory, "service:gift:v1");
    expect(kidsIn(files.jwks)).toEqual(["issuer:v1", "service:gift:v2"]);
    const after = verifierFor(files.jwks);
    await expect(after(oldToken)).rejects.toThrow(TokenError);
    expect((await after(newToken)).subject).toBe("gift");
  });
});
