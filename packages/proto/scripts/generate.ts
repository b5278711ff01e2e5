// Generates packages/proto/src/gen from proto/ with buf, offline.
//
// Third-party protos are not committed: they come from npm packages and are copied into the
// git-ignored `.gen/third_party/` module that buf.yaml declares. With `--breaking` it runs
// `buf breaking` against main instead.
import { execFileSync } from "node:child_process";
import { copyFileSync, cpSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";

const packageDir = resolve(import.meta.dirname, "..");
const root = resolve(packageDir, "../..");
const thirdParty = join(root, ".gen/third_party");
const require = createRequire(join(packageDir, "package.json"));

function packageRoot(name: string): string {
  return dirname(require.resolve(`${name}/package.json`));
}

/** [npm package, file inside it, destination import path] */
const thirdPartyFiles: ReadonlyArray<readonly [string, string, string]> = [
  ["google-proto-files", "google/api/annotations.proto", "google/api/annotations.proto"],
  ["google-proto-files", "google/api/http.proto", "google/api/http.proto"],
  // google.rpc.ErrorInfo: the detail every domain error carries (packages/server errors.ts).
  ["google-proto-files", "google/rpc/error_details.proto", "google/rpc/error_details.proto"],
  ["grpc-health-check", "proto/health/v1/health.proto", "grpc/health/v1/health.proto"],
  [
    "@grpc/reflection",
    "build/proto/grpc/reflection/v1/reflection.proto",
    "grpc/reflection/v1/reflection.proto",
  ],
  [
    "@grpc/reflection",
    "build/proto/grpc/reflection/v1alpha/reflection.proto",
    "grpc/reflection/v1alpha/reflection.proto",
  ],
];

function copyThirdParty(): void {
  rmSync(thirdParty, { recursive: true, force: true });
  for (const [pkg, file, destination] of thirdPartyFiles) {
    const target = join(thirdParty, destination);
    mkdirSync(dirname(target), { recursive: true });
    copyFileSync(join(packageRoot(pkg), file), target);
  }
}

const bin = join(packageDir, "node_modules/.bin");
const env = { ...process.env, PATH: `${bin}:${process.env.PATH ?? ""}` };
const buf = (...args: string[]) => execFileSync("buf", args, { cwd: root, env, stdio: "inherit" });

copyThirdParty();
/**
 * `buf breaking` against main. The third-party protos are not in git, so main's `proto/` and
 * `buf.yaml` are exported next to a copy of them: a workspace like this one to compare with.
 */
function breakingAgainstMain(): void {
  const base = mkdtempSync(join(tmpdir(), "ovation-breaking-"));
  try {
    const archive = execFileSync("git", ["archive", "--format=tar", "main", "proto", "buf.yaml"], {
      cwd: root,
    });
    execFileSync("tar", ["-x", "-C", base], { input: archive });
    cpSync(thirdParty, join(base, ".gen/third_party"), { recursive: true });
    buf("breaking", "--against", base);
  } finally {
    rmSync(base, { recursive: true, force: true });
  }
}

if (process.argv.includes("--breaking")) {
  breakingAgainstMain();
} else {
  buf("lint");
  buf("generate");
}
