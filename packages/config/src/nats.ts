// NATS credentials. Every process connects to NATS as its own nkey user (an Ed25519 key pair in
// the NATS encoding): the seed stays with the process, the server holds only the public key and
// what that identity may publish and subscribe (packages/events/src/permissions.ts, decision
// 0021). `./ov keys generate DIR` writes one seed per service and one for `ops` (the operator
// commands and tests) as DIR/nats/<identity>.nk.
//
// Anonymous connections are for a NATS on this machine only (a developer's open server): a
// service aimed at a remote NATS without a seed refuses to start.
import { readFileSync, statSync } from "node:fs";
import { z } from "zod";
import { fileVariable, KeyFileError, natsKeyFileNames, opsIdentity } from "./keys.ts";

/** A user seed: "SU" and 56 more base32 characters (its checksum is checked on connect). */
const userSeedPattern = /^SU[A-Z2-7]{56}$/;
/** A seed file is one line of 58 characters; anything much larger is the wrong file. */
const seedFileBytesMax = 1024;

/** Reads a NATS user seed file; throws a KeyFileError that names the file. */
export function readNatsSeedFile(file: string): Uint8Array {
  let text: string;
  try {
    if (statSync(file).size > seedFileBytesMax)
      throw new KeyFileError(`${file}: larger than ${seedFileBytesMax} bytes`);
    text = readFileSync(file, "utf8").trim();
  } catch (error) {
    if (error instanceof KeyFileError) throw error;
    throw new KeyFileError(`cannot read ${file}: ${(error as NodeJS.ErrnoException).code ?? String(error)}`);
  }
  if (!userSeedPattern.test(text)) {
    throw new KeyFileError(`${file}: not a NATS user nkey seed (SU… , 58 characters; ./ov keys generate)`);
  }
  return new TextEncoder().encode(text);
}

/** NATS_NKEY_FILE: this process's own NATS user seed. */
export const natsNkeyFileVariable = fileVariable(
  (file) => ({ seed: readNatsSeedFile(file) }),
  "path of this process's NATS nkey seed file (nats/<name>.nk of ./ov keys generate)",
);

const loopbackNames = new Set(["localhost", "::1", "[::1]"]);

/**
 * The servers of a NATS_URL, a comma-separated list of `nats://host:port` or `host:port`, as
 * the client's `servers` option takes them (it reads one string as one server).
 */
export function natsServerList(url: string): string[] {
  return url
    .split(",")
    .map((entry) => entry.trim())
    .filter((entry) => entry !== "");
}

/** The host names of a NATS_URL. */
export function natsHostsOf(url: string): string[] {
  return natsServerList(url).map((entry) => {
    try {
      return new URL(entry.includes("://") ? entry : `nats://${entry}`).hostname;
    } catch {
      return entry;
    }
  });
}

/** True when every server in NATS_URL is on this machine (loopback), where anonymous is allowed. */
export function isLoopbackNatsUrl(url: string): boolean {
  const hosts = natsHostsOf(url);
  return (
    hosts.length > 0 && hosts.every((host) => loopbackNames.has(host) || /^127(\.\d{1,3}){3}$/.test(host))
  );
}

type NatsVariables = { NATS_URL: string; NATS_NKEY_FILE?: { file: string; seed: Uint8Array } | undefined };

/** Refuses an anonymous connection to a NATS that is not on this machine. */
export function refuseRemoteAnonymousNats(config: NatsVariables, ctx: z.RefinementCtx): void {
  if (config.NATS_NKEY_FILE !== undefined || isLoopbackNatsUrl(config.NATS_URL)) return;
  ctx.addIssue({
    code: "custom",
    path: ["NATS_NKEY_FILE"],
    message:
      "required when NATS_URL is not on this machine: without an nkey the process would connect " +
      "anonymously, and a secured NATS refuses that (./ov keys generate writes nats/<name>.nk)",
  });
}

/**
 * The final schema of an operator command (`./ov dlq`, `./ov replay`, …): it connects to NATS as
 * `ops`, with NATS_NKEY_FILE or else OVATION_KEY_DIR's nats/ops.nk.
 */
export function operatorSchema<Schema extends z.ZodType<NatsVariables>>(schema: Schema) {
  return z.preprocess((env) => {
    const variables = { ...(env as Record<string, string | undefined>) };
    const directory = variables.OVATION_KEY_DIR;
    if ((variables.NATS_NKEY_FILE ?? "") === "" && directory !== undefined && directory !== "") {
      const file = `${directory.replace(/\/$/, "")}/${natsKeyFileNames.seed(opsIdentity)}`;
      if (isFile(file)) variables.NATS_NKEY_FILE = file;
    }
    return variables;
  }, schema.superRefine(refuseRemoteAnonymousNats));
}

function isFile(file: string): boolean {
  try {
    return statSync(file).isFile();
  } catch {
    return false;
  }
}
