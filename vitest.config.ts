// One vitest run over every package and service. Integration tests talk to the real Postgres
// and NATS; each test file isolates itself with its own database and stream prefix (testkit).
import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    projects: [
      ...["packages", "services"].map((folder) => ({
        extends: true,
        test: { name: folder, include: [`${folder}/*/{src,test}/**/*.test.ts`] },
      })),
      { extends: true, test: { name: "scripts", include: ["scripts/**/*.test.ts"] } },
      { extends: true, test: { name: "deploy", include: ["deploy/test/**/*.test.ts"] } },
    ],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Two cores: two files at a time keeps timing-sensitive fault tests honest.
    maxWorkers: 2,
    pool: "forks",
    reporters: ["default"],
  },
});
