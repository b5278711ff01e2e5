// A service's environment as its pod would get it (envFrom ConfigMaps, then env, which wins),
// with the files of its volumes written under a scratch directory, so the service's own config
// schema (services/<name>/src/config.ts) can judge it: right variable names, valid values, key
// files that hold that service's keys.
import { copyFileSync, mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { ConfigError, loadConfig } from "@ovation/config";
import { type CallGraph, find, podSpecOf, type ServiceSpec } from "./checks.ts";
import type { Kustomization } from "./kustomize.ts";

export interface Materials {
  /** The repository: where generator sources are found, relative to `sourceRoot`. */
  root: string;
  /** Where generator sources live instead (a scratch copy with a fresh `./ov keys generate`). */
  sourceRoot: string;
  /** A scratch directory that stands for the pod's file system. */
  podRoot: string;
  /** Stand-ins for the values of `envs`-generated Secrets ("<secret>/<key>" → value). */
  secretValues: Readonly<Record<string, string>>;
}

interface PodEnvironment {
  env: Record<string, string>;
  /** Variables the manifests set (ConfigMaps and env), to be checked against the schema. */
  set: string[];
  problems: string[];
}

export function podEnvironment(k: Kustomization, service: string, materials: Materials): PodEnvironment {
  const pod = podSpecOf(k, service);
  const container = pod?.containers[0];
  if (pod === undefined || container === undefined) return { env: {}, set: [], problems: ["no Deployment"] };
  const podRoot = path.join(materials.podRoot, service);
  const env: Record<string, string> = {};
  const problems: string[] = [];
  for (const source of container.envFrom ?? []) {
    const configMap = source.configMapRef && find(k, "ConfigMap", source.configMapRef.name);
    Object.assign(env, (configMap?.data as Record<string, string> | undefined) ?? {});
  }
  for (const variable of container.env ?? []) {
    const reference = variable.valueFrom?.secretKeyRef ?? variable.valueFrom?.configMapKeyRef;
    const value =
      variable.value ??
      (variable.valueFrom?.configMapKeyRef
        ? (find(k, "ConfigMap", reference!.name)?.data as Record<string, string> | undefined)?.[
            reference!.key
          ]
        : materials.secretValues[`${reference?.name}/${reference?.key}`]);
    if (value === undefined) problems.push(`${variable.name}: no value`);
    else env[variable.name] = value;
  }
  const set = Object.keys(env);
  const original = { ...env };
  for (const mount of container.volumeMounts ?? []) {
    const volume = pod.volumes?.find((candidate) => candidate.name === mount.name);
    const source = volume?.secret?.secretName ?? volume?.configMap?.name;
    const generated = k.generated.find((entry) => entry.name === source);
    const directory = path.join(podRoot, mount.mountPath);
    mkdirSync(directory, { recursive: true });
    for (const [key, file] of generated?.files ?? [])
      copyFileSync(path.join(materials.sourceRoot, file), path.join(directory, key));
    const configMap = volume?.configMap && find(k, "ConfigMap", volume.configMap.name);
    for (const [key, text] of Object.entries((configMap?.data as Record<string, string> | undefined) ?? {}))
      writeFileSync(path.join(directory, key), text);
    // Paths into the volume point into the scratch copy instead.
    for (const [name, value] of Object.entries(original))
      if (value.startsWith(`${mount.mountPath}/`)) env[name] = path.join(podRoot, value);
  }
  return { env, set, problems };
}

type Schema = Parameters<typeof loadConfig>[0];

async function configSchemaOf(root: string, service: string): Promise<Schema> {
  const module = await import(pathToFileURL(path.join(root, "services", service, "src", "config.ts")).href);
  const schema = module[`${service}ConfigSchema`] as Schema | undefined;
  if (schema === undefined)
    throw new Error(`services/${service}/src/config.ts exports no ${service}ConfigSchema`);
  return schema;
}

/**
 * Each service's schema accepts its pod's environment, and knows every variable the manifests
 * set; every other service it can be pointed at (its schema reads that service's *_URL) is set
 * to that service's Service. Also returns the call graph those schemas define.
 */
export async function configProblems(
  k: Kustomization,
  services: readonly ServiceSpec[],
  materials: Materials,
): Promise<{ problems: string[]; calls: CallGraph }> {
  const problems: string[] = [];
  const calls = new Map<string, Set<string>>();
  const urlOf = (service: ServiceSpec) => `http://${service.name}:${service.port}`;
  for (const service of services) {
    const schema = await configSchemaOf(materials.root, service.name);
    const pod = podEnvironment(k, service.name, materials);
    const report = (problem: string) => problems.push(`${service.name}: ${problem}`);
    pod.problems.forEach(report);
    let config: Record<string, unknown>;
    try {
      config = loadConfig(schema, pod.env) as Record<string, unknown>;
    } catch (error) {
      if (!(error instanceof ConfigError)) throw error;
      report(error.message);
      continue;
    }
    for (const name of pod.set)
      if (!(name in config)) report(`${name} is not a variable of its config schema`);
    // Offer every service's URL: the schema keeps those it reads, which are whom it calls.
    const offered = Object.fromEntries(services.map((other) => [other.urlEnv, urlOf(other)]));
    const reads = loadConfig(schema, { ...offered, ...pod.env }) as Record<string, unknown>;
    const callees = services.filter((other) => other !== service && other.urlEnv in reads);
    calls.set(service.name, new Set(callees.map((callee) => callee.name)));
    for (const callee of callees)
      if (pod.env[callee.urlEnv] !== urlOf(callee))
        report(`${callee.urlEnv} is ${pod.env[callee.urlEnv] ?? "unset"}, not ${urlOf(callee)}`);
  }
  return { problems, calls };
}
