// The client runs in a browser: its entry bundles for the browser platform with every import
// resolved inside the bundle: no Node built-in (node:*), no package left outside. A `node:`
// import anywhere in the runtime code, or in what it imports, fails this test.
import path from "node:path";
import { rolldown } from "rolldown";
import { expect, it } from "vitest";

it("bundles for the browser with nothing left to import", async () => {
  const warnings: string[] = [];
  const bundle = await rolldown({
    input: path.resolve(import.meta.dirname, "../src/index.ts"),
    platform: "browser",
    onwarn: (warning) => {
      warnings.push(`${warning.code}: ${warning.message}`);
    },
  });
  try {
    const { output } = await bundle.generate({ format: "esm" });
    const chunks = output.filter((item) => item.type === "chunk");
    expect(chunks).toHaveLength(1);
    const [chunk] = chunks;
    expect(chunk!.imports).toEqual([]);
    expect(chunk!.dynamicImports).toEqual([]);
    expect(chunk!.code).not.toMatch(/\bnode:/);
    expect(chunk!.exports).toEqual(expect.arrayContaining(["createOvationClient", "ChannelClient", "ok"]));
    expect(warnings).toEqual([]);
  } finally {
    await bundle.close();
  }
});
