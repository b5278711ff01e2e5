// Reads a kustomization the way `kubectl apply -k` would, as far as these manifests use it:
// `resources` (files, and directories with their own kustomization.yaml, recursively), the
// `namespace`, `images`, and the names and keys of what `configMapGenerator` and
// `secretGenerator` produce. Nothing is fetched and no kustomize binary runs: what kustomize
// would add (hash suffixes, rewritten references) changes no name this test relies on.
import { readFileSync, statSync } from "node:fs";
import path from "node:path";
import { parseAllDocuments } from "yaml";

export interface KubernetesObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
  [field: string]: unknown;
}

/** An object and the file it came from (for messages). */
export interface LoadedObject {
  file: string;
  object: KubernetesObject;
}

/** A ConfigMap or Secret a generator makes, with the keys it will hold and where they come from. */
export interface Generated {
  kind: "ConfigMap" | "Secret";
  name: string;
  /** Key → source file (relative to the repository), for `files` entries. */
  files: Map<string, string>;
  /** Keys of `envs` files, read from the committed `<file>.example` beside each. */
  envKeys: string[];
  /** The `envs` files themselves (written by the operator, never committed). */
  envFiles: string[];
  /** Inline values: a literal in a committed file, which these manifests must never have. */
  literals: string[];
}

export interface Kustomization {
  namespace: string | undefined;
  images: { name: string; newName?: string; newTag?: string }[];
  objects: LoadedObject[];
  generated: Generated[];
}

interface KustomizationFile {
  namespace?: string;
  resources?: string[];
  images?: { name: string; newName?: string; newTag?: string }[];
  configMapGenerator?: GeneratorEntry[];
  secretGenerator?: GeneratorEntry[];
}

interface GeneratorEntry {
  name: string;
  files?: string[];
  envs?: string[];
  literals?: string[];
}

/** Every YAML document of a file; a syntax error or a duplicated key is an error, not a warning. */
export function readYamlDocuments(file: string, options: { merge?: boolean } = {}): unknown[] {
  const documents = parseAllDocuments(readFileSync(file, "utf8"), {
    uniqueKeys: true,
    strict: true,
    merge: options.merge ?? false,
  });
  const list = Array.isArray(documents) ? documents : [documents];
  return list.flatMap((document) => {
    const problems = [...document.errors, ...document.warnings];
    if (problems.length > 0) throw new Error(`${file}: ${problems.map((p) => p.message).join("; ")}`);
    const value: unknown = document.toJS();
    return value === null || value === undefined ? [] : [value];
  });
}

/** Loads `directory/kustomization.yaml` and everything it lists, relative to `root` in messages. */
export function loadKustomization(directory: string, root: string): Kustomization {
  const file = path.join(directory, "kustomization.yaml");
  const [spec] = readYamlDocuments(file) as [KustomizationFile];
  const objects: LoadedObject[] = [];
  const generated: Generated[] = [];
  for (const resource of spec.resources ?? []) {
    const target = path.join(directory, resource);
    if (statSync(target).isDirectory()) {
      const nested = loadKustomization(target, root);
      objects.push(...nested.objects);
      generated.push(...nested.generated);
      continue;
    }
    for (const object of readYamlDocuments(target))
      objects.push({ file: path.relative(root, target), object: object as KubernetesObject });
  }
  const generator = (kind: Generated["kind"]) => (entry: GeneratorEntry) =>
    generatedBy(kind, entry, directory, root);
  generated.push(...(spec.configMapGenerator ?? []).map(generator("ConfigMap")));
  generated.push(...(spec.secretGenerator ?? []).map(generator("Secret")));
  return { namespace: spec.namespace, images: spec.images ?? [], objects, generated };
}

function generatedBy(kind: Generated["kind"], entry: GeneratorEntry, directory: string, root: string) {
  const files = new Map<string, string>();
  for (const source of entry.files ?? []) {
    const [key, file] = source.includes("=") ? source.split("=", 2) : [path.basename(source), source];
    files.set(key!, path.relative(root, path.join(directory, file!)));
  }
  const envFiles = (entry.envs ?? []).map((file) => path.relative(root, path.join(directory, file)));
  const envKeys = (entry.envs ?? []).flatMap((file) =>
    readFileSync(path.join(directory, `${file}.example`), "utf8")
      .split("\n")
      .filter((line) => line.trim() !== "" && !line.startsWith("#"))
      .map((line) => line.slice(0, line.indexOf("="))),
  );
  return { kind, name: entry.name, files, envKeys, envFiles, literals: entry.literals ?? [] };
}
