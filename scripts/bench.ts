// `pnpm bench NAME` runs services/*/bench/NAME.bench.ts (a plain Node script that prints its
// figures; most are named after their service, `boosts` lives with the gift service).
// Benchmarks are not tests: they measure, against baselines taken in the same run.
import { spawnSync } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import { join, resolve } from "node:path";

const root = resolve(import.meta.dirname, "..");
const benches = new Map<string, string>();
for (const service of readdirSync(join(root, "services"))) {
  const dir = join(root, "services", service, "bench");
  if (!existsSync(dir)) continue;
  for (const file of readdirSync(dir))
    if (file.endsWith(".bench.ts")) benches.set(file.slice(0, -".bench.ts".length), join(dir, file));
}
const name = process.argv[2];
const script = name === undefined ? undefined : benches.get(name);
if (script === undefined) {
  console.error(`usage: pnpm bench <${[...benches.keys()].sort().join("|")}> [options]`);
  process.exit(2);
}
const result = spawnSync(process.execPath, [script, ...process.argv.slice(3)], {
  stdio: "inherit",
});
process.exit(result.status ?? 1);
