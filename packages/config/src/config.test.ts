// Proves configuration errors name every bad variable at once, defaults apply, and key files
// are checked at start-up: public keys only in JWKS_FILE, a service's own key (and no other)
// in SERVICE_KEY_FILE, OVATION_KEY_DIR hands a process only what it may hold (its own NATS seed
// too), no process connects to a remote NATS anonymously, and printed URLs hide their password.
import { generateKeyPairSync } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import {
  ConfigError,
  infrastructureConfigSchema,
  isDatabaseUrl,
  isLoopbackNatsUrl,
  issuerKeyFileVariable,
  keyFileNames,
  loadConfig,
  natsKeyFileNames,
  operatorSchema,
  portVariable,
  redactUrl,
  serviceConfigSchema,
  serviceKeyFileVariable,
  serviceSchema,
  z,
} from "./index.ts";

const directory = mkdtempSync(path.join(tmpdir(), "ovation-config-test-"));
afterAll(() => rmSync(directory, { recursive: true, force: true }));

function privateJwk(kid: string) {
  const { privateKey } = generateKeyPairSync("ed25519");
  return { ...privateKey.export({ format: "jwk" }), kid };
}
const publicOf = ({ d: _, ...jwk }: ReturnType<typeof privateJwk>) => jwk;
const write = (name: string, value: unknown) => {
  const file = path.join(directory, name);
  writeFileSync(file, typeof value === "string" ? value : JSON.stringify(value));
  return file;
};

const issuer = privateJwk("issuer:v1");
const gift = privateJwk("service:gift:v1");
const wallet = privateJwk("service:wallet:v1");
const jwksFile = write(keyFileNames.jwks, { keys: [issuer, gift, wallet].map(publicOf) });
const giftKeyFile = write(keyFileNames.service("gift"), gift);
write(keyFileNames.service("wallet"), wallet);
const issuerKeyFile = write(keyFileNames.issuer, issuer);
// Seeds with the right shape (their checksum is only checked when connecting).
mkdirSync(path.join(directory, natsKeyFileNames.directory));
const seedOf = (letter: string) => `SU${letter.repeat(56)}\n`;
const giftSeedFile = write(natsKeyFileNames.seed("gift"), seedOf("G"));
const opsSeedFile = write(natsKeyFileNames.seed("ops"), seedOf("O"));
write(natsKeyFileNames.seed("wallet"), seedOf("W"));

/** What a gift-like service declares: its own key is required, it never holds the issuer's. */
const giftSchema = serviceSchema(
  "gift",
  serviceConfigSchema.extend({ SERVICE_KEY_FILE: serviceKeyFileVariable("gift") }),
);

const messageOf = (run: () => unknown): string => {
  try {
    run();
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return (error as Error).message;
  }
  throw new Error("expected a ConfigError");
};

describe("loadConfig", () => {
  it("applies defaults for the development infrastructure", () => {
    const config = loadConfig(serviceConfigSchema, { JWKS_FILE: jwksFile });
    expect(config.NATS_URL).toBe("nats://127.0.0.1:4222");
    expect(config.OVATION_PREFIX).toBe("");
    expect(config.NATS_REPLICAS).toBe(1);
    expect(config.JWKS_FILE.jwks.keys.map((key) => key.kid)).toEqual([
      "issuer:v1",
      "service:gift:v1",
      "service:wallet:v1",
    ]);
  });

  it("lists every invalid variable in one error", () => {
    const schema = serviceConfigSchema.extend({ PORT: portVariable(1), REQUIRED_THING: z.string() });
    const env = {
      DATABASE_URL: "mysql://nope",
      OVATION_PREFIX: "Bad.Prefix",
      PORT: "99999",
      JWKS_URL: "http://idp.example.com/jwks.json",
      NATS_REPLICAS: "0",
    };
    const message = messageOf(() => loadConfig(schema, env));
    expect(message).toContain("DATABASE_URL: invalid");
    expect(message).toContain("OVATION_PREFIX: invalid");
    expect(message).toContain("PORT: invalid");
    expect(message).toContain("REQUIRED_THING: missing");
    expect(message).toContain("JWKS_FILE: missing");
    expect(message).toContain("JWKS_URL: invalid: https only");
    expect(message).toContain("NATS_REPLICAS: invalid");
  });
});

describe("JWKS_FILE", () => {
  it.each([
    ["a private key", { keys: [gift] }, "holds a private key (d)"],
    ["an RSA key", { keys: [{ kty: "RSA", n: "x", e: "AQAB", kid: "r" }] }, "kty must be OKP"],
    [
      "a malformed service key id",
      { keys: [publicOf(privateJwk("service:gift"))] },
      "service:<name>:<version>",
    ],
    ["a service key id with an upper-case name", { keys: [publicOf(privateJwk("service:Gift:1"))] }, "kid"],
    [
      "two keys under one kid",
      { keys: [publicOf(gift), { ...publicOf(wallet), kid: gift.kid }] },
      "share one kid",
    ],
    ["no keys", { keys: [] }, "JWKS_FILE: invalid"],
    ["not JSON", "{", "not JSON"],
  ])("refuses %s", (_, content, message) => {
    const file = write("bad-jwks.json", content);
    expect(messageOf(() => loadConfig(serviceConfigSchema, { JWKS_FILE: file }))).toContain(message);
  });

  it("names a file that cannot be read", () => {
    const missing = path.join(directory, "nope.json");
    expect(messageOf(() => loadConfig(serviceConfigSchema, { JWKS_FILE: missing }))).toContain(
      `JWKS_FILE: invalid: cannot read ${missing}: ENOENT`,
    );
  });
});

describe("private key files", () => {
  it("a service holds its own key, and no other service's or the issuer's", () => {
    const config = loadConfig(giftSchema, { JWKS_FILE: jwksFile, SERVICE_KEY_FILE: giftKeyFile });
    expect(config.SERVICE_KEY_FILE.jwk.kid).toBe("service:gift:v1");
    const walletKeyFile = path.join(directory, keyFileNames.service("wallet"));
    expect(
      messageOf(() => loadConfig(giftSchema, { JWKS_FILE: jwksFile, SERVICE_KEY_FILE: walletKeyFile })),
    ).toContain("is not service gift's");
    expect(
      messageOf(() => loadConfig(giftSchema, { JWKS_FILE: jwksFile, SERVICE_KEY_FILE: issuerKeyFile })),
    ).toContain("is not service gift's");
    expect(messageOf(() => loadConfig(giftSchema, { JWKS_FILE: jwksFile }))).toContain(
      "SERVICE_KEY_FILE: missing",
    );
  });

  it("the issuer key is never a service key", () => {
    const schema = z.object({ TOKEN_ISSUER_KEY_FILE: issuerKeyFileVariable });
    expect(loadConfig(schema, { TOKEN_ISSUER_KEY_FILE: issuerKeyFile }).TOKEN_ISSUER_KEY_FILE.jwk.kid).toBe(
      "issuer:v1",
    );
    expect(messageOf(() => loadConfig(schema, { TOKEN_ISSUER_KEY_FILE: giftKeyFile }))).toContain(
      "is a service key",
    );
  });

  it("refuses a key whose public half is not published in JWKS_FILE", () => {
    const unpublished = write("gift-v2.private.jwk", privateJwk("service:gift:v2"));
    expect(
      messageOf(() => loadConfig(giftSchema, { JWKS_FILE: jwksFile, SERVICE_KEY_FILE: unpublished })),
    ).toContain("SERVICE_KEY_FILE: invalid: key service:gift:v2 is not in JWKS_FILE");
  });

  it("OVATION_KEY_DIR fills only the unset files this process may hold", () => {
    const config = loadConfig(giftSchema, { OVATION_KEY_DIR: directory });
    expect(config.JWKS_FILE.file).toBe(jwksFile);
    expect(config.SERVICE_KEY_FILE.file).toBe(giftKeyFile);
    const issuerSchema = (asIssuer: boolean) =>
      serviceSchema(
        "gateway",
        serviceConfigSchema.extend({ TOKEN_ISSUER_KEY_FILE: issuerKeyFileVariable.optional() }),
        { issuer: () => asIssuer },
      );
    expect(
      loadConfig(issuerSchema(false), { OVATION_KEY_DIR: directory }).TOKEN_ISSUER_KEY_FILE,
    ).toBeUndefined();
    expect(loadConfig(issuerSchema(true), { OVATION_KEY_DIR: directory }).TOKEN_ISSUER_KEY_FILE?.file).toBe(
      issuerKeyFile,
    );
    const other = write("other-jwks.json", { keys: [publicOf(gift)] });
    expect(loadConfig(giftSchema, { OVATION_KEY_DIR: directory, JWKS_FILE: other }).JWKS_FILE.file).toBe(
      other,
    );
  });
});

describe("NATS_NKEY_FILE", () => {
  const remote = "nats://nats.prod.example:4222";

  it("OVATION_KEY_DIR gives a service its own seed and the operator commands ops's", () => {
    const config = loadConfig(giftSchema, { OVATION_KEY_DIR: directory });
    expect(config.NATS_NKEY_FILE?.file).toBe(giftSeedFile);
    expect(new TextDecoder().decode(config.NATS_NKEY_FILE?.seed)).toBe(seedOf("G").trim());
    const operator = loadConfig(operatorSchema(infrastructureConfigSchema), {
      OVATION_KEY_DIR: directory,
      NATS_URL: remote,
    });
    expect(operator.NATS_NKEY_FILE?.file).toBe(opsSeedFile);
  });

  it("refuses to connect anonymously to a NATS that is not on this machine", () => {
    const env = { JWKS_FILE: jwksFile, SERVICE_KEY_FILE: giftKeyFile };
    expect(loadConfig(giftSchema, env).NATS_NKEY_FILE).toBeUndefined();
    for (const url of [remote, "nats://127.0.0.1:4222,nats://10.0.0.7:4222", "10.0.0.7:4222"]) {
      expect(messageOf(() => loadConfig(giftSchema, { ...env, NATS_URL: url }))).toContain(
        "NATS_NKEY_FILE: missing: required when NATS_URL is not on this machine",
      );
      expect(
        messageOf(() => loadConfig(operatorSchema(infrastructureConfigSchema), { NATS_URL: url })),
      ).toContain("NATS_NKEY_FILE: missing");
    }
    expect(loadConfig(giftSchema, { ...env, NATS_URL: remote, NATS_NKEY_FILE: giftSeedFile }).NATS_URL).toBe(
      remote,
    );
    // A service that never connects to NATS is not held to it.
    const busless = serviceSchema("gift", serviceConfigSchema, { bus: false });
    expect(loadConfig(busless, { ...env, NATS_URL: remote }).NATS_URL).toBe(remote);
  });

  it("tells loopback NATS URLs apart", () => {
    for (const url of ["nats://127.0.0.1:4222", "localhost:4222", "nats://[::1]:4222", "127.0.0.9", "a,b"])
      expect(isLoopbackNatsUrl(url), url).toBe(!url.startsWith("a,"));
    expect(isLoopbackNatsUrl("nats://nats:4222")).toBe(false);
    expect(isLoopbackNatsUrl("")).toBe(false);
  });

  it("refuses a file that holds no user seed", () => {
    const env = { JWKS_FILE: jwksFile, SERVICE_KEY_FILE: giftKeyFile };
    for (const content of ["SAAAA", `SO${"A".repeat(56)}`, "{}"]) {
      const file = write("bad.nk", content);
      expect(messageOf(() => loadConfig(giftSchema, { ...env, NATS_NKEY_FILE: file }))).toContain(
        "NATS_NKEY_FILE: invalid",
      );
    }
  });
});

describe("redactUrl", () => {
  it("never prints a password, and nothing of a URL it cannot parse", () => {
    expect(redactUrl("postgres://u:secret@h:1/d")).toBe("postgres://u:***@h:1/d");
    expect(redactUrl("postgres://postgres@127.0.0.1:5432/ovation")).toBe(
      "postgres://postgres@127.0.0.1:5432/ovation",
    );
    expect(redactUrl("//u:secret@h/d")).toBe("<unparseable URL>");
    expect(redactUrl("postgres://u:secret@h1:5441,h2:5442/d?target_session_attrs=read-write")).toBe(
      "postgres://u:***@h1:5441,h2:5442/d?target_session_attrs=read-write",
    );
  });
});

describe("database URLs", () => {
  it("take libpq's host lists and refuse anything else", () => {
    for (const url of [
      "postgres://postgres@127.0.0.1:5432/ovation",
      "postgresql://u:p@db/ovation?host=/var/run/postgresql",
      "postgres://postgres@127.0.0.1:5441,127.0.0.1:5442/ovation?target_session_attrs=read-write",
      "postgres://u@[::1]:5441,db-2/ovation",
    ])
      expect(isDatabaseUrl(url)).toBe(true);
    for (const url of [
      "mysql://u@h/d",
      "postgres://u@h1:5441,,h2/d",
      "postgres://u@h1:99999/d",
      "postgres://u@h 1/d",
      "not a url",
    ])
      expect(isDatabaseUrl(url)).toBe(false);
  });
});
