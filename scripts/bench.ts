// `pnpm bench NAME` runs services/NAME/bench/NAME.bench.ts (a plain Node script that prints its
// figures). Benchmarks are not tests: they measure, against baselines taken in the same run.
import { spawnSync } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import { join, resolve } from "node:path";

const root = resolve(import.meta.dirname, "..");
const available = readdirSync(join(root, "services")).filter((name) =>
  existsSync(join(root, "services", name, "bench", `${name}.bench.ts`)),
);
const name = process.argv[2];
if (name === undefined || !available.includes(name)) {
  console.error(`usage: pnpm bench <${available.join("|")}> [options]`);
  process.exit(2);
}
const result = spawnSync(
  process.execPath,
  [join(root, "services", name, "bench", `${name}.bench.ts`), ...process.argv.slice(3)],
  {
    stdio: "inherit",
  },
);
process.exit(result.status ?? 1);
