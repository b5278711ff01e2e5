// `pnpm bench NAME` and `./ov soak NAME` run services/*/<kind>/NAME.<kind>.ts: a plain Node
// script that prints its figures (benchmarks) or its figures and checks (soaks), found by name
// in whichever service it lives with, with the arguments after the name.
import { spawnSync } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import { join, resolve } from "node:path";

const root = resolve(import.meta.dirname, "..");

/** Runs the script of `kind` named by the first argument and exits with its status. */
export function runNamedScript(kind: "bench" | "soak", argv: readonly string[]): never {
  const scripts = new Map<string, string>();
  for (const service of readdirSync(join(root, "services"))) {
    const directory = join(root, "services", service, kind);
    if (!existsSync(directory)) continue;
    for (const file of readdirSync(directory))
      if (file.endsWith(`.${kind}.ts`))
        scripts.set(file.slice(0, -`.${kind}.ts`.length), join(directory, file));
  }
  const name = argv[0];
  const script = name === undefined ? undefined : scripts.get(name);
  if (script === undefined) {
    console.error(`usage: ${kind} <${[...scripts.keys()].sort().join("|")}> [options]`);
    process.exit(2);
  }
  const result = spawnSync(process.execPath, [script, ...argv.slice(1)], { stdio: "inherit" });
  process.exit(result.status ?? 1);
}
