// `./ov keys …`: the operator's key tool. Keys are Ed25519 JWKs, one file per holder, so each
// process can be given its own private key and nothing else (README "Security").
//
//   generate DIR             issuer.private.jwk, <service>.private.jwk for every service, and
//                            jwks.json with all public keys; nats/<name>.nk, a NATS nkey seed
//                            per service and for ops, and nats/nats.conf, the nats-server
//                            configuration with their public keys and permissions (no prefix,
//                            0.0.0.0:4222, JetStream store /data: what docker-compose.yml runs)
//                            and nats/auth.conf, its users alone (what the NATS Helm chart
//                            includes); a rerun only adds missing keys and renders both again
//   rotate DIR NAME          a new key for NAME (a service, or "issuer") in <file>.next, its
//                            public key added to jwks.json beside the current one
//   retire DIR KID           removes KID from jwks.json once no key file here holds it
//   token DIR USER [ROLES]   a user token (roles comma separated, default user) signed with
//                            DIR/issuer.private.jwk, for buf curl and scripts; TTL_SECONDS
//                            (default 3600), JWT_ISSUER and JWT_AUDIENCE from the environment
import { writeFile } from "node:fs/promises";
import path from "node:path";
import {
  createUserTokenSigner,
  ensureKeySet,
  isRole,
  keySetFiles,
  natsIdentitiesOf,
  readNatsPublicKeys,
  readSigningKey,
  retireKey,
  rotateKey,
} from "@ovation/auth";
import { isBusIdentity, renderNatsServerConfig } from "@ovation/events";
import { discoverServices } from "./up.ts";

const usage = `usage: ./ov keys generate DIR
       ./ov keys rotate DIR SERVICE|issuer
       ./ov keys retire DIR KID
       ./ov keys token DIR USER [ROLE,…]`;
const root = path.resolve(import.meta.dirname, "..");
const defaultTokenTtlSeconds = 3600;
const tokenTtlMaxSeconds = 7 * 24 * 3600;
/** Where the containerised nats-server listens and keeps JetStream (docker-compose.yml). */
const composeNats = { host: "0.0.0.0", port: 4222, storeDirectory: "/data" } as const;

async function generate(directory: string): Promise<void> {
  const services = (await discoverServices(root)).map((service) => service.name);
  const { files, created, natsCreated } = await ensureKeySet(directory, services);
  const generated = [...created, ...natsCreated.map((identity) => `nats:${identity}`)];
  console.log(generated.length === 0 ? "every key was already there" : `generated ${generated.join(", ")}`);
  console.log(`public keys (every service):      ${files.jwks}`);
  console.log(`issuer key (gateway dev tokens):  ${files.issuer}`);
  for (const service of services)
    console.log(`${`${service} key (${service} only):`.padEnd(33)} ${files.service(service)}`);
  const identities = natsIdentitiesOf(services).filter((identity) => {
    if (isBusIdentity(identity)) return true;
    console.error(
      `${identity} has no bus permissions (packages/events/src/permissions.ts): left out of nats.conf`,
    );
    return false;
  });
  for (const identity of identities)
    console.log(`${`${identity} NATS seed (${identity} only):`.padEnd(33)} ${files.natsSeed(identity)}`);
  // Public keys and permissions only: readable by the NATS server's user, like jwks.json.
  const natsConfig = renderNatsServerConfig({
    prefix: "",
    publicKeys: readNatsPublicKeys(directory, identities),
    ...composeNats,
  });
  await writeFile(files.natsConfig, natsConfig, { mode: 0o644 });
  console.log(`nats-server configuration:        ${files.natsConfig}`);
  await writeFile(files.natsAuthorization, authorizationBlockOf(natsConfig), { mode: 0o644 });
  console.log(`its users alone (NATS Helm chart): ${files.natsAuthorization}`);
}

/**
 * The `authorization { … }` block of a rendered nats-server configuration, with its header
 * comment: the users and their permissions without listen address, port or JetStream store, for
 * servers whose configuration comes from elsewhere (the NATS Helm chart includes it,
 * deploy/nats/values.yaml). Braces inside quoted strings do not count.
 */
function authorizationBlockOf(config: string): string {
  const start = config.search(/^authorization \{$/m);
  if (start < 0) throw new Error("the rendered nats-server configuration has no authorization block");
  const header = config
    .split("\n")
    .filter((line) => line.startsWith("# "))
    .join("\n");
  let depth = 0;
  let quoted = false;
  for (let index = start; index < config.length; index++) {
    const character = config[index];
    if (character === '"' && config[index - 1] !== "\\") quoted = !quoted;
    else if (quoted) continue;
    else if (character === "{") depth++;
    else if (character === "}" && --depth === 0) return `${header}\n${config.slice(start, index + 1)}\n`;
  }
  throw new Error("the authorization block of the rendered nats-server configuration is not closed");
}

async function token(
  env: NodeJS.ProcessEnv,
  directory: string,
  user: string,
  roleList = "user",
): Promise<void> {
  const roles = roleList.split(",");
  const unknown = roles.filter((role) => !isRole(role));
  if (unknown.length > 0) throw new Error(`unknown roles: ${unknown.join(", ")}`);
  const ttlSeconds = Number(env.TTL_SECONDS ?? defaultTokenTtlSeconds);
  if (!Number.isInteger(ttlSeconds) || ttlSeconds < 1 || ttlSeconds > tokenTtlMaxSeconds) {
    throw new Error(`TTL_SECONDS must be an integer in 1..${tokenTtlMaxSeconds}`);
  }
  const sign = createUserTokenSigner(await readSigningKey(keySetFiles(directory).issuer), {
    issuer: env.JWT_ISSUER || "ovation",
    audience: env.JWT_AUDIENCE || "ovation",
  });
  console.log(await sign({ subject: user, roles: roles.filter(isRole), ttlSeconds }));
}

async function main([command, directory, argument, extra]: string[]): Promise<number> {
  if (directory === undefined) {
    console.error(usage);
    return 2;
  }
  try {
    if (command === "generate") await generate(directory);
    else if (command === "rotate" && argument !== undefined) {
      const kid = await rotateKey(directory, argument);
      console.log(`added ${kid} to ${keySetFiles(directory).jwks}; its private key is in the .next file`);
    } else if (command === "retire" && argument !== undefined) {
      await retireKey(directory, argument);
      console.log(`removed ${argument} from ${keySetFiles(directory).jwks}`);
    } else if (command === "token" && argument !== undefined)
      await token(process.env, directory, argument, extra);
    else {
      console.error(usage);
      return 2;
    }
    return 0;
  } catch (error) {
    console.error(error instanceof Error ? error.message : String(error));
    return 1;
  }
}

process.exitCode = await main(process.argv.slice(2));
