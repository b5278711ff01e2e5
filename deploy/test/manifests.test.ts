// Proves that what `kubectl apply -k deploy/kubernetes` applies would be accepted by Kubernetes
// and would run Ovation as its code expects, without a cluster, kubectl or a download: every
// object listed by the kustomization against the Kubernetes schema of its kind (strictly), every
// service with its Deployment, Service, autoscaler, disruption budget, probes and resources,
// every reference resolved, no secret committed, each pod's environment accepted by that
// service's own config schema with keys from the real `./ov keys generate`, and NetworkPolicies
// that let through exactly the calls the services' code makes. Then that each of those checks
// fails on a manifest broken the way it guards against, and the NATS values and the compose
// cluster profile.
import { spawnSync } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { isBusIdentity } from "@ovation/events";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type CallGraph,
  type CommittedFile,
  type Container,
  discoverServices,
  find,
  literalSecretProblems,
  networkProblems,
  podSpecOf,
  referenceProblems,
  type ServiceSpec,
  workloadProblems,
} from "../src/checks.ts";
import {
  type KubernetesObject,
  type Kustomization,
  loadKustomization,
  readYamlDocuments,
} from "../src/kustomize.ts";
import { chartLikeServerConfig, composeProblems, natsValuesProblems } from "../src/nats.ts";
import { configProblems, type Materials } from "../src/pod-environment.ts";
import { schemaProblems } from "../src/schema.ts";

const root = path.resolve(import.meta.dirname, "../..");
const kustomizationDirectory = path.join(root, "deploy/kubernetes");

let scratch: string;
let rendered: Kustomization;
let services: ServiceSpec[];
let materials: Materials;

beforeAll(async () => {
  rendered = loadKustomization(kustomizationDirectory, root);
  services = discoverServices(root);
  scratch = await mkdtemp(path.join(tmpdir(), "ovation-deploy-"));
  // The key set the operator makes, where the kustomization's generators read it.
  const keys = path.join(scratch, "deploy/kubernetes/keys");
  const generated = spawnSync(process.execPath, [path.join(root, "scripts/keys.ts"), "generate", keys], {
    encoding: "utf8",
  });
  expect(generated.status, generated.stderr).toBe(0);
  materials = {
    root,
    sourceRoot: scratch,
    podRoot: path.join(scratch, "pods"),
    secretValues: { "ovation-database/DATABASE_URL": "postgres://ovation@postgres.invalid:5432/ovation" },
  };
});

afterAll(async () => {
  await rm(scratch, { recursive: true, force: true });
});

async function allSchemaProblems(k: Kustomization): Promise<string[]> {
  const problems = await Promise.all(
    k.objects.map(async ({ file, object }) =>
      (await schemaProblems(object)).map(
        (problem) => `${file} ${object.kind}/${object.metadata?.name}: ${problem}`,
      ),
    ),
  );
  return problems.flat();
}

/** Files under deploy/ that are or would be committed (tracked, or new and not ignored). */
async function committedFiles(): Promise<CommittedFile[]> {
  const listed = spawnSync(
    "git",
    ["ls-files", "--cached", "--others", "--exclude-standard", "--", "deploy"],
    {
      cwd: root,
      encoding: "utf8",
    },
  );
  expect(listed.status, listed.stderr).toBe(0);
  const files = listed.stdout.split("\n").filter((file) => file !== "");
  return Promise.all(
    files.map(async (file) => ({ file, text: await readFile(path.join(root, file), "utf8") })),
  );
}

const isIgnored = (file: string) =>
  spawnSync("git", ["check-ignore", "-q", "--no-index", file], { cwd: root }).status === 0;

let calls: CallGraph;

describe("deploy/kubernetes", () => {
  it("holds valid objects of the Kubernetes schema of their kind, with no unknown field", async () => {
    expect(await allSchemaProblems(rendered)).toEqual([]);
    const kinds = rendered.objects.map(({ object }) => object.kind);
    console.log(`${rendered.objects.length} objects (${[...new Set(kinds)].join(", ")}) validated`);
  });

  it("runs every service with a Service, autoscaler, disruption budget, probes and resources", () => {
    expect(services.map((service) => service.name)).toEqual([
      "card",
      "discount",
      "gateway",
      "gift",
      "order",
      "pk",
      "wallet",
    ]);
    expect(workloadProblems(rendered, services)).toEqual([]);
  });

  it("names only ConfigMaps, Secrets, keys, Services and images that exist", () => {
    expect(referenceProblems(rendered)).toEqual([]);
  });

  it("commits no key, password or token", async () => {
    expect(literalSecretProblems(rendered, await committedFiles(), isIgnored)).toEqual([]);
  });

  it("gives each service an environment its own config schema accepts, with its own keys", async () => {
    const result = await configProblems(rendered, services, materials);
    expect(result.problems).toEqual([]);
    calls = result.calls;
    // What the schemas say (clients/ read these URLs): the graph the NetworkPolicies must allow.
    expect(Object.fromEntries([...calls].map(([caller, callees]) => [caller, [...callees].sort()]))).toEqual({
      card: [],
      discount: ["wallet"],
      gateway: ["discount", "gift", "order", "pk", "wallet"],
      gift: ["pk", "wallet"],
      order: ["card", "wallet"],
      pk: [],
      wallet: [],
    });
  });

  it("lets through exactly the calls the code makes, and the infrastructure each service uses", () => {
    expect(calls, "the config test derives the call graph").toBeDefined();
    expect(networkProblems(rendered, services, calls, isBusIdentity)).toEqual([]);
  });
});

/** A copy of the rendered manifests with one thing broken. */
function broken(mutate: (k: Kustomization) => void): Kustomization {
  const copy = structuredClone(rendered);
  mutate(copy);
  return copy;
}

const object = (k: Kustomization, kind: string, name: string) => find(k, kind, name) as KubernetesObject;
const containerOf = (k: Kustomization, service: string) => podSpecOf(k, service)!.containers[0] as Container;
const configOf = (k: Kustomization, name: string) =>
  object(k, "ConfigMap", name).data as Record<string, string>;

describe("the checks catch a broken manifest", () => {
  it("a misspelt field, a wrong type", async () => {
    const typo = broken((k) => {
      const container = containerOf(k, "wallet") as Container & Record<string, unknown>;
      container.readinesProbe = container.readinessProbe;
      delete container.readinessProbe;
      (object(k, "HorizontalPodAutoscaler", "gift").spec as Record<string, unknown>).minReplicas = "two";
    });
    const problems = await allSchemaProblems(typo);
    expect(problems).toContainEqual(
      expect.stringContaining("/spec/template/spec/containers/0/readinesProbe: unknown field"),
    );
    expect(problems).toContainEqual(expect.stringContaining("data/spec/minReplicas must be integer"));
    expect(workloadProblems(typo, services)).toContain(
      "wallet: readinessProbe is not GET /readyz on its port",
    );
  });

  it("a service without liveness, requests, autoscaler or disruption budget", () => {
    const k = broken((k) => {
      delete containerOf(k, "pk").livenessProbe;
      delete containerOf(k, "order").resources!.requests;
      k.objects = k.objects.filter(
        ({ object }) =>
          !(object.kind === "HorizontalPodAutoscaler" && object.metadata.name === "gift") &&
          !(object.kind === "PodDisruptionBudget" && object.metadata.name === "card"),
      );
    });
    expect(workloadProblems(k, services)).toEqual([
      "card: no PodDisruptionBudget",
      "gift: no HorizontalPodAutoscaler",
      "order: no cpu request",
      "order: no memory request",
      "pk: livenessProbe is not gRPC health on its port",
    ]);
  });

  it("a gateway probed on its public port, or without its management port", () => {
    const k = broken((k) => {
      const gateway = containerOf(k, "gateway");
      gateway.readinessProbe!.httpGet!.port = "http";
      gateway.env = gateway.env!.filter((variable) => variable.name !== "MANAGEMENT_PORT");
    });
    expect(workloadProblems(k, services)).toEqual([
      "gateway: MANAGEMENT_PORT is not 8081",
      "gateway: readinessProbe is not GET /readyz on its management port",
    ]);
  });

  it("a reference to a Secret or key nothing makes", () => {
    const k = broken((k) => {
      podSpecOf(k, "gift")!.volumes!.find((volume) => volume.name === "keys")!.secret!.secretName =
        "gift-keys";
      containerOf(k, "wallet").env!.find((v) => v.name === "DATABASE_URL")!.valueFrom!.secretKeyRef!.key =
        "url";
    });
    expect(referenceProblems(k)).toEqual([
      "deploy/kubernetes/base/wallet/deployment.yaml: Secret ovation-database has no key url",
      "deploy/kubernetes/base/gift/deployment.yaml: no Secret gift-keys",
    ]);
  });

  it("a committed seed, a Secret object, a literal, an unignored key file", async () => {
    const seed = await readFile(path.join(scratch, "deploy/kubernetes/keys/nats/wallet.nk"), "utf8");
    const k = broken((k) => {
      k.objects.push({
        file: "deploy/kubernetes/base/shared/leak.yaml",
        object: { apiVersion: "v1", kind: "Secret", metadata: { name: "leak" } },
      });
      const wallet = k.generated.find((entry) => entry.name === "ovation-wallet-keys")!;
      wallet.literals.push("nats.nk=SU…");
      wallet.files.set("private.jwk", "deploy/kubernetes/wallet.private.jwk.txt");
    });
    const problems = literalSecretProblems(
      k,
      [{ file: "deploy/kubernetes/notes.md", text: `seed ${seed}` }],
      isIgnored,
    );
    expect(problems).toEqual([
      "deploy/kubernetes/base/shared/leak.yaml: a Secret in the manifests (generate it from ignored files)",
      "Secret ovation-wallet-keys: literal values in a committed file",
      "Secret ovation-wallet-keys: deploy/kubernetes/wallet.private.jwk.txt is not git-ignored",
      "deploy/kubernetes/notes.md: holds a NATS nkey seed",
    ]);
  });

  it("a variable the service does not read, a value it refuses, another service's key", async () => {
    const k = broken((k) => {
      configOf(k, "ovation-wallet").WALLET_ASSETZ = "COIN";
      configOf(k, "ovation-pk").DATABASE_POOL_MAX = "0";
      configOf(k, "ovation-gift").PK_URL = "http://pk:50054";
      const discount = k.generated.find((entry) => entry.name === "ovation-discount-keys")!;
      discount.files.set("private.jwk", "deploy/kubernetes/keys/order.private.jwk");
    });
    const { problems } = await configProblems(k, services, {
      ...materials,
      podRoot: path.join(scratch, "broken"),
    });
    expect(problems).toEqual([
      expect.stringMatching(
        /^discount: invalid configuration:\n {2}- SERVICE_KEY_FILE: invalid: .* is not service discount's/,
      ),
      "gift: PK_URL is http://pk:50054, not http://pk:50053",
      expect.stringMatching(/^pk: invalid configuration:\n {2}- DATABASE_POOL_MAX: invalid: /),
      "wallet: WALLET_ASSETZ is not a variable of its config schema",
    ]);
  });

  it("a call the code does not make, a call it makes that is blocked, an open port", () => {
    const k = broken((k) => {
      const pk = object(k, "NetworkPolicy", "pk").spec as { egress: unknown[] };
      pk.egress.push({ to: [{ podSelector: { matchLabels: { "app.kubernetes.io/name": "wallet" } } }] });
      const wallet = object(k, "NetworkPolicy", "wallet").spec as { ingress: { from: unknown[] }[] };
      wallet.ingress[0]!.from.push({ podSelector: { matchLabels: { "app.kubernetes.io/name": "pk" } } });
      const gift = object(k, "NetworkPolicy", "gift").spec as { egress: unknown[] };
      gift.egress = gift.egress.slice(0, 1);
      const card = object(k, "NetworkPolicy", "card").spec as { ingress: { from?: unknown }[] };
      delete card.ingress[0]!.from;
    });
    expect(networkProblems(k, services, calls, isBusIdentity)).toEqual([
      "outside → card:50056 is allowed, the code wants it denied",
      "another namespace's pod → card is allowed, the code wants it denied",
      "gift → pk:50053 is denied, the code wants it allowed",
      "pk → wallet:50051 is allowed, the code wants it denied",
    ]);
  });
});

describe("NATS", () => {
  const valuesFile = path.join(root, "deploy/nats/values.yaml");

  it("runs the chart as a JetStream cluster of three with Ovation's users", () => {
    const [values] = readYamlDocuments(valuesFile);
    expect(natsValuesProblems(values as object)).toEqual([]);
    expect(natsValuesProblems({ config: { cluster: { enabled: true, replicas: 2 } } })).toHaveLength(4);
    expect(configOf(rendered, "ovation-shared").NATS_URL, "the chart's client Service, release nats").toBe(
      "nats://nats:4222",
    );
  });

  it("renders a server configuration with the generated users that nats-server accepts", async () => {
    const [values] = readYamlDocuments(valuesFile);
    const directory = path.join(scratch, "nats-config");
    const config = path.join(directory, "nats.conf");
    spawnSync("mkdir", ["-p", directory]);
    await writeFile(config, chartLikeServerConfig(values as object, path.join(directory, "store")));
    const users = await readFile(path.join(scratch, "deploy/kubernetes/keys/nats/auth.conf"), "utf8");
    await writeFile(path.join(directory, "auth.conf"), users);
    const checked = spawnSync("nats-server", ["-t", "-c", config], { encoding: "utf8" });
    expect(checked.status, checked.stderr).toBe(0);
    for (const identity of ["wallet", "gift", "pk", "discount", "order", "gateway", "ops"])
      expect(users).toContain(`# ${identity}\n`);
    expect(users).not.toMatch(/^(host|port|jetstream)\b/m);
    // Without the users the servers must not start open: the include is required.
    await rm(path.join(directory, "auth.conf"));
    expect(spawnSync("nats-server", ["-t", "-c", config]).status).not.toBe(0);
  });

  it("docker-compose.yml keeps its default profile and gains a three-server cluster profile", () => {
    const [compose] = readYamlDocuments(path.join(root, "docker-compose.yml"), { merge: true });
    const expected = ["postgres", "nats", ...services.map((service) => service.name)];
    expect(composeProblems(compose as never, expected)).toEqual([]);
    const single = structuredClone(compose) as { services: Record<string, { command?: string[] }> };
    single.services["nats-2"]!.command = single.services["nats-1"]!.command;
    expect(composeProblems(single as never, expected)).toEqual([
      "cluster servers need distinct server names",
    ]);
  });
});
