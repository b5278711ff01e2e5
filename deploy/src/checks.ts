// The rules every manifest under deploy/kubernetes keeps, each a function that returns its
// problems (empty: the rule holds), so the test can show each one failing on a broken copy.
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import type { Generated, KubernetesObject, Kustomization } from "./kustomize.ts";
import {
  allows,
  type Connection,
  type Endpoint,
  matchesSelector,
  type NetworkPolicy,
} from "./network-policies.ts";

/** A deployable of services/ (its package.json's "ovation" field). */
export interface ServiceSpec {
  name: string;
  port: number;
  /** The variable other services find it by (WALLET_URL). */
  urlEnv: string;
  /** Plain HTTP (the gateway) rather than the RPC server with gRPC health. */
  http: boolean;
  /** The probes' own port (MANAGEMENT_PORT, decision 0055), where the service has one. */
  managementPort?: number;
}

export function discoverServices(root: string): ServiceSpec[] {
  return readdirSync(path.join(root, "services"))
    .sort()
    .flatMap((name) => {
      const manifest = JSON.parse(readFileSync(path.join(root, "services", name, "package.json"), "utf8"));
      const ovation = manifest.ovation as
        | { port: number; urlEnv: string; http?: boolean; managementPort?: number }
        | undefined;
      return ovation === undefined
        ? []
        : [
            {
              name,
              port: ovation.port,
              urlEnv: ovation.urlEnv,
              http: !!ovation.http,
              ...(ovation.managementPort === undefined ? {} : { managementPort: ovation.managementPort }),
            },
          ];
    });
}

// Typed views of the fields these rules read; the schema check has validated their shapes.
interface Probe {
  httpGet?: { path?: string; port: number | string };
  grpc?: { port: number; service?: string };
}
interface EnvVar {
  name: string;
  value?: string;
  valueFrom?: {
    secretKeyRef?: { name: string; key: string };
    configMapKeyRef?: { name: string; key: string };
  };
}
export interface Container {
  name: string;
  image?: string;
  command?: string[];
  ports?: { name?: string; containerPort: number }[];
  env?: EnvVar[];
  envFrom?: { configMapRef?: { name: string }; secretRef?: { name: string } }[];
  resources?: { requests?: Record<string, string>; limits?: Record<string, string> };
  readinessProbe?: Probe;
  livenessProbe?: Probe;
  startupProbe?: Probe;
  volumeMounts?: { name: string; mountPath: string }[];
}
export interface Volume {
  name: string;
  secret?: { secretName: string; items?: { key: string; path: string }[] };
  configMap?: { name: string; items?: { key: string; path: string }[] };
}
export interface PodSpec {
  containers: Container[];
  volumes?: Volume[];
}
interface DeploymentSpec {
  replicas?: number;
  selector: { matchLabels?: Record<string, string> };
  template: { metadata: { labels: Record<string, string> }; spec: PodSpec };
}

export const specOf = <T>(object: KubernetesObject) => object.spec as T;

export function find(k: Kustomization, kind: string, name: string): KubernetesObject | undefined {
  return k.objects.find(({ object }) => object.kind === kind && object.metadata.name === name)?.object;
}

/** The keys a ConfigMap or Secret of that name will hold, or undefined when nothing makes it. */
export function keysOf(k: Kustomization, kind: "ConfigMap" | "Secret", name: string): string[] | undefined {
  const object = find(k, kind, name);
  if (object !== undefined)
    return Object.keys({ ...(object.data as object), ...(object.stringData as object) });
  const generated = k.generated.find((entry: Generated) => entry.kind === kind && entry.name === name);
  return generated === undefined ? undefined : [...generated.files.keys(), ...generated.envKeys];
}

export function podSpecOf(k: Kustomization, service: string): PodSpec | undefined {
  const deployment = find(k, "Deployment", service);
  return deployment === undefined ? undefined : specOf<DeploymentSpec>(deployment).template.spec;
}

/** Every service has a Deployment, Service, HorizontalPodAutoscaler and PodDisruptionBudget that fit. */
export function workloadProblems(k: Kustomization, services: readonly ServiceSpec[]): string[] {
  return services.flatMap((service) => {
    const problems = deploymentProblems(k, service);
    const deployment = find(k, "Deployment", service.name);
    if (deployment === undefined) return problems;
    const labels = specOf<DeploymentSpec>(deployment).template.metadata.labels;
    problems.push(...serviceProblems(k, service, labels), ...scalingProblems(k, service, labels));
    return problems.map((problem) => `${service.name}: ${problem}`);
  });
}

function deploymentProblems(k: Kustomization, service: ServiceSpec): string[] {
  const deployment = find(k, "Deployment", service.name);
  if (deployment === undefined) return ["no Deployment"];
  const spec = specOf<DeploymentSpec>(deployment);
  const problems: string[] = [];
  if (spec.replicas !== undefined) problems.push("Deployment sets replicas, which its autoscaler owns");
  if (!matchesSelector(spec.selector, spec.template.metadata.labels))
    problems.push("Deployment selector does not select its own pods");
  const [container, ...others] = spec.template.spec.containers;
  if (container === undefined || others.length > 0)
    return [...problems, "Deployment must run exactly one container"];
  if (container.image !== "ovation")
    problems.push(`image ${container.image}: the root Dockerfile's image is "ovation"`);
  if (container.command?.join(" ") !== `node services/${service.name}/src/main.ts`)
    problems.push(
      `command ${container.command?.join(" ")} does not start services/${service.name}/src/main.ts`,
    );
  if (!container.ports?.some((port) => port.containerPort === service.port))
    problems.push(`no container port ${service.port} (package.json "ovation".port)`);
  if (container.env?.find((variable) => variable.name === "PORT")?.value !== String(service.port))
    problems.push(`PORT is not ${service.port}`);
  if (service.managementPort !== undefined) {
    if (!container.ports?.some((port) => port.containerPort === service.managementPort))
      problems.push(`no container port ${service.managementPort} (package.json "ovation".managementPort)`);
    const variable = container.env?.find((candidate) => candidate.name === "MANAGEMENT_PORT");
    if (variable?.value !== String(service.managementPort))
      problems.push(`MANAGEMENT_PORT is not ${service.managementPort}`);
  }
  for (const resource of ["cpu", "memory"])
    if (container.resources?.requests?.[resource] === undefined) problems.push(`no ${resource} request`);
  if (container.resources?.limits?.memory === undefined) problems.push("no memory limit");
  problems.push(...probeProblems(container, service));
  return problems;
}

function probeProblems(container: Container, service: ServiceSpec): string[] {
  const problems: string[] = [];
  const onPort = (probe: Probe | undefined, pathName: string, port = service.port) =>
    probe?.httpGet?.path === pathName && portNumberOf(container, probe.httpGet.port) === port;
  // Where the service has a management port, the balancer's probes go there: it answers while
  // the main event loop is busy with a burst (0055). The start-up probe waits for the service port.
  const probePort = service.managementPort ?? service.port;
  const where = service.managementPort === undefined ? "its port" : "its management port";
  if (!onPort(container.readinessProbe, "/readyz", probePort))
    problems.push(`readinessProbe is not GET /readyz on ${where}`);
  if (!onPort(container.startupProbe, "/healthz"))
    problems.push("startupProbe is not GET /healthz on its port");
  const liveness = container.livenessProbe;
  const live = service.http
    ? onPort(liveness, "/healthz", probePort)
    : liveness?.grpc?.port === service.port && (liveness.grpc.service ?? "") === "";
  if (!live)
    problems.push(
      service.http
        ? `livenessProbe is not GET /healthz on ${where}`
        : "livenessProbe is not gRPC health on its port",
    );
  return problems;
}

function portNumberOf(container: Container, port: number | string): number | undefined {
  return typeof port === "number"
    ? port
    : container.ports?.find((candidate) => candidate.name === port)?.containerPort;
}

function serviceProblems(k: Kustomization, service: ServiceSpec, labels: Record<string, string>): string[] {
  const object = find(k, "Service", service.name);
  if (object === undefined) return ["no Service (other services find it as http://<name>:<port>)"];
  const spec = specOf<{
    selector?: Record<string, string>;
    ports: { port: number; targetPort?: number | string }[];
  }>(object);
  const container = podSpecOf(k, service.name)!.containers[0]!;
  const problems: string[] = [];
  if (!matchesSelector({ matchLabels: spec.selector ?? {} }, labels) || spec.selector === undefined)
    problems.push("Service does not select the Deployment's pods");
  const port = spec.ports.find((candidate) => candidate.port === service.port);
  if (port === undefined || portNumberOf(container, port.targetPort ?? port.port) !== service.port)
    problems.push(`Service does not forward port ${service.port} to the container`);
  return problems;
}

function scalingProblems(k: Kustomization, service: ServiceSpec, labels: Record<string, string>): string[] {
  const problems: string[] = [];
  const autoscaler = find(k, "HorizontalPodAutoscaler", service.name);
  if (autoscaler === undefined) problems.push("no HorizontalPodAutoscaler");
  else {
    const spec = specOf<{
      scaleTargetRef: { kind: string; name: string };
      minReplicas?: number;
      maxReplicas: number;
      metrics?: { type: string; resource?: { name: string } }[];
    }>(autoscaler);
    if (spec.scaleTargetRef.kind !== "Deployment" || spec.scaleTargetRef.name !== service.name)
      problems.push("HorizontalPodAutoscaler does not scale its Deployment");
    if ((spec.minReplicas ?? 1) < 2) problems.push("fewer than two replicas: one crash is an outage");
    if (!spec.metrics?.some((metric) => metric.type === "Resource" && metric.resource?.name === "cpu"))
      problems.push("HorizontalPodAutoscaler does not scale on CPU");
  }
  const budget = find(k, "PodDisruptionBudget", service.name);
  if (budget === undefined) problems.push("no PodDisruptionBudget");
  else if (
    !matchesSelector(specOf<{ selector: { matchLabels?: Record<string, string> } }>(budget).selector, labels)
  )
    problems.push("PodDisruptionBudget does not select the Deployment's pods");
  return problems;
}

/** Every ConfigMap, Secret, key, Service and image a manifest names exists. */
export function referenceProblems(k: Kustomization): string[] {
  const problems: string[] = [];
  const needKeys = (where: string, kind: "ConfigMap" | "Secret", name: string, keys: string[] = []) => {
    const known = keysOf(k, kind, name);
    if (known === undefined) problems.push(`${where}: no ${kind} ${name}`);
    else
      for (const key of keys)
        if (!known.includes(key)) problems.push(`${where}: ${kind} ${name} has no key ${key}`);
  };
  const images = new Set(k.images.map((image) => image.name));
  for (const { file, object } of k.objects) {
    if (object.kind !== "Deployment") continue;
    const pod = specOf<DeploymentSpec>(object).template.spec;
    for (const container of pod.containers) {
      if (!images.has(container.image ?? ""))
        problems.push(`${file}: image ${container.image} is not in images:`);
      for (const source of container.envFrom ?? []) {
        if (source.configMapRef) needKeys(file, "ConfigMap", source.configMapRef.name);
        if (source.secretRef) needKeys(file, "Secret", source.secretRef.name);
      }
      for (const variable of container.env ?? []) {
        const { secretKeyRef, configMapKeyRef } = variable.valueFrom ?? {};
        if (secretKeyRef) needKeys(file, "Secret", secretKeyRef.name, [secretKeyRef.key]);
        if (configMapKeyRef) needKeys(file, "ConfigMap", configMapKeyRef.name, [configMapKeyRef.key]);
      }
      for (const mount of container.volumeMounts ?? [])
        if (!pod.volumes?.some((volume) => volume.name === mount.name))
          problems.push(`${file}: mounts a volume ${mount.name} it does not have`);
    }
    for (const volume of pod.volumes ?? []) {
      const items = (volume.secret ?? volume.configMap)?.items?.map((item) => item.key);
      if (volume.secret) needKeys(file, "Secret", volume.secret.secretName, items);
      if (volume.configMap) needKeys(file, "ConfigMap", volume.configMap.name, items);
    }
  }
  for (const { file, object } of k.objects) {
    if (object.kind !== "Ingress") continue;
    const rules = specOf<{ rules?: { http?: { paths: { backend: { service?: { name: string } } }[] } }[] }>(
      object,
    ).rules;
    for (const backend of rules?.flatMap((rule) => rule.http?.paths ?? []) ?? [])
      if (backend.backend.service && find(k, "Service", backend.backend.service.name) === undefined)
        problems.push(`${file}: no Service ${backend.backend.service.name}`);
  }
  return problems;
}

/** Key material, passwords and tokens in committed text: a nkey seed, a private JWK or PEM key, a URL with a password. */
const secretPatterns: [RegExp, string][] = [
  [/\bS[UAONCX][A-Z2-7]{56}\b/, "a NATS nkey seed"],
  [/"d"\s*:\s*"[A-Za-z0-9_-]{20,}"/, "a private JWK"],
  [/-----BEGIN [A-Z ]*PRIVATE KEY-----/, "a PEM private key"],
  [/\b[a-z][a-z0-9+.-]*:\/\/[^\s:@/"']+:[^\s@/"']+@/i, "a URL with a password"],
];

export interface CommittedFile {
  file: string;
  text: string;
}

/**
 * No key, password or token is committed: no Secret objects or literal generator values, no
 * secret-looking text in any committed file, and every generated Secret's source is git-ignored.
 */
export function literalSecretProblems(
  k: Kustomization,
  committed: readonly CommittedFile[],
  isIgnored: (file: string) => boolean,
): string[] {
  const problems: string[] = [];
  for (const { file, object } of k.objects)
    if (object.kind === "Secret")
      problems.push(`${file}: a Secret in the manifests (generate it from ignored files)`);
  for (const entry of k.generated) {
    if (entry.literals.length > 0)
      problems.push(`${entry.kind} ${entry.name}: literal values in a committed file`);
    if (entry.kind !== "Secret") continue;
    for (const source of [...entry.files.values(), ...entry.envFiles])
      if (!isIgnored(source)) problems.push(`Secret ${entry.name}: ${source} is not git-ignored`);
  }
  for (const { file, text } of committed)
    for (const [pattern, what] of secretPatterns)
      if (pattern.test(text)) problems.push(`${file}: holds ${what}`);
  return problems;
}

/** The namespace's pods, one per service, with the labels of its Deployment's pod template. */
function podOf(k: Kustomization, service: string): Endpoint {
  const deployment = find(k, "Deployment", service);
  return {
    namespace: k.namespace,
    namespaceLabels: { "kubernetes.io/metadata.name": k.namespace ?? "" },
    labels: deployment === undefined ? {} : specOf<DeploymentSpec>(deployment).template.metadata.labels,
  };
}

const outside: Endpoint = {};
const natsPod: Endpoint = {
  namespace: "nats",
  namespaceLabels: { "kubernetes.io/metadata.name": "nats" },
  labels: { "app.kubernetes.io/name": "nats", "app.kubernetes.io/instance": "nats" },
};
const dnsPod: Endpoint = {
  namespace: "kube-system",
  namespaceLabels: { "kubernetes.io/metadata.name": "kube-system" },
  labels: { "k8s-app": "kube-dns" },
};
const strangerPod: Endpoint = {
  namespace: "elsewhere",
  namespaceLabels: { "kubernetes.io/metadata.name": "elsewhere" },
  labels: { "app.kubernetes.io/name": "stranger" },
};

/** Caller → callees, for every service. */
export type CallGraph = ReadonlyMap<string, ReadonlySet<string>>;

/**
 * The NetworkPolicies let through exactly the calls of `calls` between services, the gateway's
 * port from anywhere, Postgres (outside the cluster) and DNS for every service, NATS for the
 * services with a bus identity, and nothing else.
 */
export function networkProblems(
  k: Kustomization,
  services: readonly ServiceSpec[],
  calls: CallGraph,
  usesBus: (service: string) => boolean,
): string[] {
  const policies = k.objects
    .filter(({ object }) => object.kind === "NetworkPolicy")
    .map(({ object }) => object as unknown as NetworkPolicy);
  const namespace = k.namespace ?? "";
  const open = (connection: Connection) => allows(policies, namespace, connection);
  const problems: string[] = [];
  const expect = (allowed: boolean, wanted: boolean, what: string) => {
    if (allowed !== wanted)
      problems.push(
        `${what} is ${allowed ? "allowed" : "denied"}, the code wants it ${wanted ? "allowed" : "denied"}`,
      );
  };
  for (const caller of services) {
    const from = podOf(k, caller.name);
    for (const callee of services) {
      if (callee === caller) continue;
      const wanted = calls.get(caller.name)?.has(callee.name) ?? false;
      expect(
        open({ from, to: podOf(k, callee.name), port: callee.port }),
        wanted,
        `${caller.name} → ${callee.name}:${callee.port}`,
      );
    }
    const to = podOf(k, caller.name);
    expect(
      open({ from: outside, to, port: caller.port }),
      caller.http,
      `outside → ${caller.name}:${caller.port}`,
    );
    expect(
      open({ from: strangerPod, to, port: caller.port }),
      caller.http,
      `another namespace's pod → ${caller.name}`,
    );
    expect(open({ from, to: outside, port: 5432 }), true, `${caller.name} → Postgres:5432`);
    expect(open({ from, to: outside, port: 443 }), false, `${caller.name} → the internet:443`);
    expect(open({ from, to: dnsPod, port: 53, protocol: "UDP" }), true, `${caller.name} → DNS:53/UDP`);
    expect(open({ from, to: natsPod, port: 4222 }), usesBus(caller.name), `${caller.name} → NATS:4222`);
    expect(
      open({ from, to: strangerPod, port: 4222 }),
      false,
      `${caller.name} → another namespace's pod:4222`,
    );
  }
  return problems;
}
