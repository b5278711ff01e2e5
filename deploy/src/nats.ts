// The NATS side: the values given to the official NATS Helm chart (deploy/nats/values.yaml) and
// the cluster profile of docker-compose.yml. Neither Helm nor Docker runs here, so these read
// the files and check what Ovation relies on; nats-server itself judges the configuration.

interface NatsValues {
  config?: {
    cluster?: { enabled?: boolean; replicas?: number };
    jetstream?: { enabled?: boolean; fileStore?: { enabled?: boolean; pvc?: { enabled?: boolean } } };
    merge?: Record<string, unknown>;
  };
  natsBox?: { enabled?: boolean };
}

/** The file `./ov keys generate` writes with the users, included by the chart's configuration. */
export const natsAuthorizationInclude = "auth.conf";

/** A JetStream cluster of an odd number (≥ 3) of servers on disk, with Ovation's users and no anonymous client. */
export function natsValuesProblems(values: NatsValues): string[] {
  const problems: string[] = [];
  const cluster = values.config?.cluster;
  const replicas = cluster?.replicas ?? 0;
  if (cluster?.enabled !== true || replicas < 3 || replicas % 2 === 0)
    problems.push(
      "config.cluster: enabled with an odd number of servers, at least 3 (streams with three replicas)",
    );
  const jetstream = values.config?.jetstream;
  if (
    jetstream?.enabled !== true ||
    jetstream.fileStore?.enabled === false ||
    jetstream.fileStore?.pvc?.enabled === false
  )
    problems.push("config.jetstream: enabled, on persistent volumes");
  const includes = Object.entries(values.config?.merge ?? {}).filter(([key]) => key.endsWith("$include"));
  if (!includes.some(([, file]) => file === natsAuthorizationInclude))
    problems.push(`config.merge: must include ${natsAuthorizationInclude} (the users of ./ov keys generate)`);
  if (values.natsBox?.enabled !== false)
    problems.push("natsBox: its default context connects anonymously, which the servers refuse: disable it");
  return problems;
}

/**
 * The server configuration the chart renders from these values, as far as nats-server's own
 * check (`nats-server -t`) can judge it here: server name, ports, the cluster with its routes,
 * JetStream and the users' include. Routes name the chart's pods, which need not resolve for -t.
 */
export function chartLikeServerConfig(values: NatsValues, storeDirectory: string): string {
  const replicas = values.config?.cluster?.replicas ?? 1;
  const routes = Array.from({ length: replicas }, (_, index) => `"nats://nats-${index}.nats-headless:6222"`);
  const includes = Object.entries(values.config?.merge ?? {})
    .filter(([key]) => key.endsWith("$include"))
    .map(([, file]) => `include ${file};`);
  return [
    'server_name: "nats-0"',
    "port: 4222",
    "http_port: 8222",
    `cluster { name: "nats", port: 6222, no_advertise: true, routes: [${routes.join(", ")}] }`,
    `jetstream { store_dir: ${JSON.stringify(storeDirectory)} }`,
    ...includes,
    "",
  ].join("\n");
}

interface ComposeService {
  image?: string;
  profiles?: string[];
  command?: string[];
  volumes?: string[];
  configs?: { source: string }[];
  environment?: Record<string, string>;
}

/** The argument after `flag` in a command line. */
const argumentOf = (command: readonly string[], flag: string) => command[command.indexOf(flag) + 1];

/**
 * The default profile runs what it ran (one NATS and every service on it); the cluster profile
 * adds three servers with the rendered users, each its own name and store, routes to all three.
 */
export function composeProblems(
  compose: { services: Record<string, ComposeService> },
  expectedDefault: readonly string[],
): string[] {
  const problems: string[] = [];
  const services = Object.entries(compose.services);
  const always = services.filter(([, service]) => service.profiles === undefined).map(([name]) => name);
  if ([...always].sort().join() !== [...expectedDefault].sort().join())
    problems.push(`default profile runs ${always.join(", ")}, not ${expectedDefault.join(", ")}`);
  for (const name of expectedDefault.filter((name) => !["postgres", "nats", "card"].includes(name)))
    if (!compose.services[name]?.environment?.NATS_URL?.endsWith(":-nats://nats:4222}"))
      problems.push(`${name}: NATS_URL must default to the single nats (nats://nats:4222)`);
  // The profile's NATS servers (it runs PgBouncer too, decision 0043).
  const cluster = services.filter(
    ([, service]) => service.profiles?.includes("cluster") && service.image?.startsWith("nats") === true,
  );
  if (cluster.length < 3) problems.push(`cluster profile has ${cluster.length} servers, not 3`);
  const names = new Set<string>();
  const stores = new Set<string>();
  for (const [name, service] of cluster) {
    const command = service.command ?? [];
    names.add(argumentOf(command, "--server_name") ?? "");
    stores.add(service.volumes?.find((volume) => volume.endsWith(":/data")) ?? "");
    if (argumentOf(command, "--cluster_name") !== "ovation")
      problems.push(`${name}: not in cluster "ovation"`);
    if (argumentOf(command, "--cluster") !== "nats://0.0.0.0:6222")
      problems.push(`${name}: no route listener`);
    const routes = argumentOf(command, "--routes")?.split(",") ?? [];
    for (const [peer] of cluster)
      if (!routes.includes(`nats://${peer}:6222`)) problems.push(`${name}: no route to ${peer}`);
    if (!service.configs?.some((config) => config.source === "nats_conf"))
      problems.push(`${name}: does not run the rendered configuration (users, JetStream)`);
  }
  if (names.size !== cluster.length || names.has(""))
    problems.push("cluster servers need distinct server names");
  if (stores.size !== cluster.length || stores.has(""))
    problems.push("cluster servers need a store (/data) each");
  return problems;
}
