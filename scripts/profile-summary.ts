// Summarises V8 CPU profiles (.cpuprofile, from `node --cpu-prof` or BENCH_PROFILE_DIR) into
// where the time goes: self time by function and by package or project file, and total time
// (the function and what it called) of the project's own functions, idle excluded.
//   node scripts/profile-summary.ts FILE.cpuprofile [TOP] [--after SECONDS]
// --after skips the first SECONDS of the profile (start-up: loading and compiling modules).
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
  children?: number[];
}
interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

const { positionals, values } = parseArgs({
  allowPositionals: true,
  options: { after: { type: "string", default: "0" } },
});
const [file, topArgument] = positionals;
if (file === undefined) {
  console.error("usage: node scripts/profile-summary.ts FILE.cpuprofile [TOP] [--after SECONDS]");
  process.exit(2);
}
const top = Number(topArgument ?? 25);
const skipMicros = Number(values.after) * 1e6;
const profile = JSON.parse(readFileSync(file, "utf8")) as Profile;
const byId = new Map(profile.nodes.map((node) => [node.id, node]));
const parentOf = new Map<number, number>();
for (const node of profile.nodes) for (const child of node.children ?? []) parentOf.set(child, node.id);
const selfMicros = new Map<number, number>();
/** Time of each project function with everything it called, each sample counted once per function. */
const totalMicros = new Map<string, number>();
let elapsed = 0;
for (const [index, id] of profile.samples.entries()) {
  const delta = profile.timeDeltas[index] ?? 0;
  elapsed += delta;
  if (elapsed < skipMicros) continue;
  selfMicros.set(id, (selfMicros.get(id) ?? 0) + delta);
  const seen = new Set<string>();
  for (let node: number | undefined = id; node !== undefined; node = parentOf.get(node)) {
    const frame = byId.get(node)!.callFrame;
    if (!/\/(packages|services)\//.test(frame.url) || frame.url.includes("node_modules")) continue;
    const name = `${frame.functionName || "(anonymous)"} ${origin(frame.url)}:${frame.lineNumber + 1}`;
    if (seen.has(name)) continue;
    seen.add(name);
    totalMicros.set(name, (totalMicros.get(name) ?? 0) + delta);
  }
}

/** A short name for where code lives: the npm package, or the project file. */
function origin(url: string): string {
  if (url === "") return "(native)";
  const inPackage = /node_modules\/(?:\.pnpm\/[^/]+\/node_modules\/)?((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (inPackage) return inPackage[1]!;
  if (url.startsWith("node:")) return url;
  const inProject = /\/(packages|services)\/(.+)$/.exec(url);
  return inProject ? `${inProject[1]}/${inProject[2]}` : url;
}

const functions = new Map<string, number>();
const origins = new Map<string, number>();
let busy = 0;
let idle = 0;
for (const [id, micros] of selfMicros) {
  const frame = byId.get(id)!.callFrame;
  if (frame.functionName === "(idle)" || frame.functionName === "(program)") {
    idle += frame.functionName === "(idle)" ? micros : 0;
    if (frame.functionName === "(idle)") continue;
  }
  busy += micros;
  const where = origin(frame.url);
  const name = `${frame.functionName || "(anonymous)"} ${where}${frame.url ? `:${frame.lineNumber + 1}` : ""}`;
  functions.set(name, (functions.get(name) ?? 0) + micros);
  origins.set(where, (origins.get(where) ?? 0) + micros);
}

const percent = (micros: number) => `${((100 * micros) / busy).toFixed(1).padStart(5)} %`;
const print = (title: string, entries: Map<string, number>) => {
  console.log(`\n${title}`);
  for (const [name, micros] of [...entries].sort((a, b) => b[1] - a[1]).slice(0, top)) {
    console.log(`${percent(micros)}  ${name}`);
  }
};
console.log(`${file}: busy ${(busy / 1e6).toFixed(1)} s, idle ${(idle / 1e6).toFixed(1)} s`);
print("self time by origin", origins);
print("self time by function", functions);
print("total time of the project's functions (with what they called)", totalMicros);
