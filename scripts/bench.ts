// `pnpm bench NAME` runs services/*/bench/NAME.bench.ts (a plain Node script that prints its
// figures; most are named after their service, `boosts` lives with the gift service).
// Benchmarks are not tests: they measure, against baselines taken in the same run.
import { runNamedScript } from "./named-script.ts";

runNamedScript("bench", process.argv.slice(2));
