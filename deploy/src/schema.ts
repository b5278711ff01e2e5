// Validates a Kubernetes object against the OpenAPI schema of its apiVersion and kind, as
// published by Kubernetes and compiled into JSON-schema validators by the kubernetes-models
// package (no download at test time). Strict, like `kubectl apply`'s default field validation
// and kubeconform's -strict: a field the schema does not define is an error, so a misspelt
// `readinesProbe` fails here instead of being dropped silently.
//
// The compiled validators read every property the schema defines and iterate the keys of map
// types (labels, data, resource quantities); a property they never touch is one the schema does
// not know. So the object is validated through a proxy that records what was read.

/** Problems of `object`, each with its JSON path; empty when it is valid. */
export async function schemaProblems(object: { apiVersion?: unknown; kind?: unknown }): Promise<string[]> {
  const { apiVersion, kind } = object;
  if (typeof apiVersion !== "string" || typeof kind !== "string") return ["apiVersion and kind are required"];
  const model = await modelOf(apiVersion, kind);
  if (model === undefined) return [`no schema for ${apiVersion} ${kind}`];
  const read = new WeakMap<object, Set<string>>();
  const problems: string[] = [];
  try {
    model.prototype.validate.call(recordingReads(object, read));
  } catch (error) {
    problems.push(error instanceof Error ? error.message : String(error));
  }
  problems.push(...unknownFields(object, read, "").map((field) => `${field}: unknown field`));
  return problems;
}

interface Model {
  prototype: { validate(this: unknown): void };
  apiVersion: string;
  kind: string;
}

/** The model class for a kind, from the module of its group and version ("apps/v1", "v1"). */
async function modelOf(apiVersion: string, kind: string): Promise<Model | undefined> {
  if (!/^([a-z0-9.-]+\/)?v[0-9a-z]+$/.test(apiVersion)) return undefined;
  let module: Record<string, unknown>;
  try {
    module = await import(/* @vite-ignore */ `kubernetes-models/${apiVersion}`);
  } catch {
    return undefined;
  }
  const model = module[kind] as Model | undefined;
  return model?.kind === kind && model.apiVersion === apiVersion ? model : undefined;
}

function recordingReads<T>(value: T, read: WeakMap<object, Set<string>>): T {
  if (value === null || typeof value !== "object") return value;
  const keys = new Set<string>();
  read.set(value, keys);
  return new Proxy(value, {
    get(target, key, receiver) {
      if (typeof key === "string") keys.add(key);
      return recordingReads(Reflect.get(target, key, receiver), read);
    },
  });
}

function unknownFields(value: unknown, read: WeakMap<object, Set<string>>, at: string): string[] {
  if (value === null || typeof value !== "object") return [];
  const keys = read.get(value) ?? new Set<string>();
  // An unknown field is reported once, not with everything under it.
  return Object.entries(value).flatMap(([key, child]) =>
    Array.isArray(value) || keys.has(key) ? unknownFields(child, read, `${at}/${key}`) : [`${at}/${key}`],
  );
}
