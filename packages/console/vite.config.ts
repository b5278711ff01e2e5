// The console's bundle: one page and its hashed assets under dist/, which the gateway serves at
// /console (services/gateway/src/rest/console.ts). Built by the package's `generate` task, so
// `./ov up`, `./ov test` and the Docker image build it like any generated tree; dist/ is
// git-ignored. Everything is bundled: the page loads nothing from another origin.
import { defineConfig } from "vite";

export default defineConfig({
  base: "/console/",
  // JSX is Preact's (the automatic runtime), as in tsconfig.json.
  oxc: { jsx: { runtime: "automatic", importSource: "preact" } },
  build: {
    outDir: "dist",
    emptyOutDir: true,
    // Named constants rather than defaults: a bundle the gateway can cache forever by name.
    assetsDir: "assets",
    sourcemap: false,
    target: "es2022",
    chunkSizeWarningLimit: 400,
  },
});
