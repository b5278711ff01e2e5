// The launcher's pure parts (discovery, env, keys, the dev-token and NATS decisions) against
// temporary fake service trees, and its process handling against a tiny real service: it
// starts, answers on its PORT and stops. `./ov keys generate` renders a nats-server
// configuration that nats-server accepts.
import { spawnSync } from "node:child_process";
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { PassThrough } from "node:stream";
import { keySetFiles, readNatsPublicKeys } from "@ovation/auth";
import { freePort } from "@ovation/testkit/bench";
import { afterEach, describe, expect, it } from "vitest";
import {
  findOnPath,
  isRunning,
  parseEndpoint,
  portAcceptsConnections,
  spawnManaged,
  stopProcesses,
  waitForPort,
  withDatabase,
} from "./infra.ts";
import { clusterNodes, clusterUrl, writeClusterConfigs } from "./nats-cluster.ts";
import type { ServiceSpec } from "./up.ts";
import {
  buildServiceEnv,
  databaseNameOf,
  defaultDatabaseUrl,
  defaultNatsUrl,
  discoverServices,
  formatTable,
  natsEndpoints,
  parseLaunchSettings,
  parseUpArguments,
  planNats,
  prepareKeys,
  readInfraConfig,
  replicaLabel,
  replicaSet,
  resolveDevTokens,
} from "./up.ts";

const temporaryDirectories: string[] = [];

afterEach(async () => {
  for (const directory of temporaryDirectories.splice(0))
    await rm(directory, { recursive: true, force: true });
});

async function temporaryRoot(): Promise<string> {
  const directory = await mkdtemp(path.join(tmpdir(), "ovation-up-"));
  temporaryDirectories.push(directory);
  return directory;
}

async function writeService(
  root: string,
  name: string,
  manifest: object,
  mainSource?: string,
): Promise<void> {
  const directory = path.join(root, "services", name);
  await mkdir(path.join(directory, "src"), { recursive: true });
  await writeFile(
    path.join(directory, "package.json"),
    JSON.stringify({ name: `@ovation/${name}`, type: "module", ...manifest }),
  );
  if (mainSource !== undefined) await writeFile(path.join(directory, "src", "main.ts"), mainSource);
}

// Listens on PORT like a real service; SIGTERM closes the server so the process ends by itself.
const fakeServiceSource = `
import { createServer } from "node:net";
const server = createServer((socket) => socket.end());
server.listen(Number(process.env.PORT), "127.0.0.1", () => console.log("listening on " + process.env.PORT));
process.on("SIGTERM", () => { console.log("draining"); server.close(); });
`;

// Ignores SIGTERM, as a wedged service would: only SIGKILL ends it.
const stubbornServiceSource = `
import { createServer } from "node:net";
createServer().listen(Number(process.env.PORT), "127.0.0.1");
process.on("SIGTERM", () => console.log("ignoring SIGTERM"));
`;

describe("discoverServices", () => {
  it("finds services with an ovation field, sorted, and skips the rest", async () => {
    const root = await temporaryRoot();
    await writeService(root, "wallet", { ovation: { port: 50051, urlEnv: "WALLET_URL" } }, "");
    await writeService(root, "gateway", { ovation: { port: 8080, urlEnv: "GATEWAY_URL", http: true } }, "");
    await writeService(root, "tools", {}, "");
    await mkdir(path.join(root, "services", "empty-directory"));

    const services = await discoverServices(root);

    expect(services).toEqual([
      {
        name: "gateway",
        entry: "services/gateway/src/main.ts",
        port: 8080,
        urlEnv: "GATEWAY_URL",
        http: true,
      },
      {
        name: "wallet",
        entry: "services/wallet/src/main.ts",
        port: 50051,
        urlEnv: "WALLET_URL",
        http: false,
      },
    ]);
  });

  it("returns nothing when there is no services directory", async () => {
    expect(await discoverServices(await temporaryRoot())).toEqual([]);
  });

  it("names the service whose main.ts is missing", async () => {
    const root = await temporaryRoot();
    await writeService(root, "gift", { ovation: { port: 50052, urlEnv: "GIFT_URL" } });
    await expect(discoverServices(root)).rejects.toThrow("services/gift/src/main.ts does not exist");
  });

  it("rejects two services on one port", async () => {
    const root = await temporaryRoot();
    await writeService(root, "gift", { ovation: { port: 50051, urlEnv: "GIFT_URL" } }, "");
    await writeService(root, "wallet", { ovation: { port: 50051, urlEnv: "WALLET_URL" } }, "");
    await expect(discoverServices(root)).rejects.toThrow("gift and wallet both declare ovation.port 50051");
  });

  it("rejects a management port that is another service's port", async () => {
    const root = await temporaryRoot();
    await writeService(
      root,
      "gateway",
      { ovation: { port: 8080, managementPort: 50051, urlEnv: "GATEWAY_URL" } },
      "",
    );
    await writeService(root, "wallet", { ovation: { port: 50051, urlEnv: "WALLET_URL" } }, "");
    await expect(discoverServices(root)).rejects.toThrow("gateway and wallet both declare port 50051");
  });

  it("rejects two services with one URL variable", async () => {
    const root = await temporaryRoot();
    await writeService(root, "gift", { ovation: { port: 50052, urlEnv: "WALLET_URL" } }, "");
    await writeService(root, "wallet", { ovation: { port: 50051, urlEnv: "WALLET_URL" } }, "");
    await expect(discoverServices(root)).rejects.toThrow("both declare ovation.urlEnv WALLET_URL");
  });
});

describe("parseLaunchSettings", () => {
  const manifestPath = "services/x/package.json";

  it("treats a missing field as not a launchable service", () => {
    expect(parseLaunchSettings(manifestPath, { name: "x" })).toBeUndefined();
    expect(parseLaunchSettings(manifestPath, null)).toBeUndefined();
  });

  it.each([
    [{ ovation: 5 }, '"ovation" must be an object'],
    [{ ovation: { port: "50051", urlEnv: "X_URL" } }, '"ovation.port" must be an integer in 1..65535'],
    [{ ovation: { port: 0, urlEnv: "X_URL" } }, '"ovation.port"'],
    [{ ovation: { port: 65_536, urlEnv: "X_URL" } }, '"ovation.port"'],
    [{ ovation: { port: 1.5, urlEnv: "X_URL" } }, '"ovation.port"'],
    [{ ovation: { port: 1 } }, '"ovation.urlEnv" must be an UPPER_SNAKE_CASE variable name'],
    [{ ovation: { port: 1, urlEnv: "wallet-url" } }, '"ovation.urlEnv"'],
    [{ ovation: { port: 1, urlEnv: "X_URL", http: "yes" } }, '"ovation.http" must be a boolean'],
    [
      { ovation: { port: 1, urlEnv: "X_URL", managementPort: 1 } },
      '"ovation.managementPort" must be an integer',
    ],
    [{ ovation: { port: 1, urlEnv: "X_URL", managementPort: "2" } }, '"ovation.managementPort"'],
  ])("rejects %j naming the property", (manifest, message) => {
    expect(() => parseLaunchSettings(manifestPath, manifest)).toThrow(`${manifestPath}: ${message}`);
  });
});

describe("service environment", () => {
  const wallet: ServiceSpec = {
    name: "wallet",
    entry: "services/wallet/src/main.ts",
    port: 50051,
    urlEnv: "WALLET_URL",
    http: false,
  };
  const gateway: ServiceSpec = {
    name: "gateway",
    entry: "services/gateway/src/main.ts",
    port: 8080,
    urlEnv: "GATEWAY_URL",
    http: true,
    managementPort: 8081,
  };
  const keys = keySetFiles("/keys");
  const settings = { databaseUrl: "postgres://a/b", natsUrl: "nats://c:1", keys, devTokens: true };

  it("inherits the environment and adds port, peers, infrastructure and the service's own key only", () => {
    const inherited = {
      PATH: "/bin",
      PORT: "1",
      WALLET_URL: "http://elsewhere",
      OVATION_DEV_TOKENS: "true",
      // Left over in the shell: none of it may reach a service.
      OVATION_KEY_DIR: "/all-keys",
      TOKEN_ISSUER_KEY_FILE: "/all-keys/issuer.private.jwk",
      SERVICE_KEY_FILE: "/all-keys/gift.private.jwk",
      JWKS_FILE: "/elsewhere/jwks.json",
      NATS_NKEY_FILE: "/all-keys/nats/ops.nk",
    };

    const env = buildServiceEnv(wallet, [wallet, gateway], settings, inherited);

    expect(env).toEqual({
      PATH: "/bin",
      PORT: "50051",
      WALLET_URL: "http://127.0.0.1:50051",
      GATEWAY_URL: "http://127.0.0.1:8080",
      DATABASE_URL: "postgres://a/b",
      NATS_URL: "nats://c:1",
      JWKS_FILE: "/keys/jwks.json",
      SERVICE_KEY_FILE: "/keys/wallet.private.jwk",
      NATS_NKEY_FILE: "/keys/nats/wallet.nk",
    });
    expect(buildServiceEnv(gateway, [wallet, gateway], settings, {}).PORT).toBe("8080");
  });

  it("gives the issuer key to the gateway only, and only with dev tokens", () => {
    const on = buildServiceEnv(gateway, [wallet, gateway], settings, {});
    expect(on).toMatchObject({
      OVATION_DEV_TOKENS: "true",
      TOKEN_ISSUER_KEY_FILE: "/keys/issuer.private.jwk",
      SERVICE_KEY_FILE: "/keys/gateway.private.jwk",
    });
    const off = buildServiceEnv(gateway, [wallet, gateway], { ...settings, devTokens: false }, {});
    expect(off.OVATION_DEV_TOKENS).toBe("false");
    expect(off.TOKEN_ISSUER_KEY_FILE).toBeUndefined();
    expect(buildServiceEnv(wallet, [wallet, gateway], settings, {}).TOKEN_ISSUER_KEY_FILE).toBeUndefined();
  });

  it("turns dev tokens on only when Postgres and NATS are both on this machine", () => {
    const local = { databaseUrl: defaultDatabaseUrl, natsUrl: "nats://localhost:4222" };
    expect(resolveDevTokens(local, {})).toEqual({ enabled: true, why: "on: local infrastructure" });
    expect(
      resolveDevTokens({ databaseUrl: "postgres://[::1]:5432/x", natsUrl: defaultNatsUrl }, {}).enabled,
    ).toBe(true);
    expect(resolveDevTokens(local, { OVATION_DEV_TOKENS: "false" }).enabled).toBe(false);
    const remoteNats = { ...local, natsUrl: "nats://nats.prod.example:4222" };
    expect(resolveDevTokens(remoteNats, {})).toEqual({
      enabled: false,
      why: "off: infrastructure is remote",
    });
    const remoteDatabase = { ...local, databaseUrl: "postgres://u:secret@db.prod.example/ovation" };
    expect(resolveDevTokens(remoteDatabase, {}).enabled).toBe(false);
    expect(() => resolveDevTokens(remoteDatabase, { OVATION_DEV_TOKENS: "true" })).toThrow(
      "refusing OVATION_DEV_TOKENS=true: postgres://u:***@db.prod.example/ovation is not on this machine",
    );
  });

  it("uses a secured NATS, and never an open one silently", () => {
    const local = { url: defaultNatsUrl, explicit: false, openBusAllowed: false };
    expect(planNats({ ...local, probe: "nothing" })).toMatchObject({ action: "start", url: defaultNatsUrl });
    expect(planNats({ ...local, probe: "ours" })).toMatchObject({ action: "use", url: defaultNatsUrl });
    expect(() => planNats({ ...local, probe: "foreign" })).toThrow("refuses the ops key of .data/keys");
    // An open NATS at the default address: a secured one on the next free port, said so.
    expect(planNats({ ...local, probe: "open", freePort: 4223 })).toEqual({
      action: "start",
      url: "nats://127.0.0.1:4223",
      note: "secured nats-server started here: the one at 127.0.0.1:4222 is open (anonymous), so it is left alone",
    });
    // Asked for by name: refused, unless the open bus is accepted explicitly.
    const named = { ...local, url: "nats://127.0.0.1:4222", explicit: true };
    expect(() => planNats({ ...named, probe: "open", freePort: 4223 })).toThrow(
      "accepts anonymous connections: anyone who reaches it may publish any event",
    );
    expect(planNats({ ...named, probe: "open", openBusAllowed: true })).toMatchObject({
      action: "use",
      note: expect.stringContaining("OPEN (OVATION_OPEN_BUS=true)"),
    });
    expect(() => planNats({ ...named, url: "nats://nats.prod.example:4222", probe: "nothing" })).toThrow(
      "NATS does not answer at nats.prod.example:4222",
    );
  });

  it("renders with ./ov keys generate a nats-server configuration that nats-server accepts", async () => {
    const directory = path.join(await temporaryRoot(), "keys");
    const keys = path.resolve(import.meta.dirname, "keys.ts");
    const generated = spawnSync(process.execPath, [keys, "generate", directory], { encoding: "utf8" });
    expect(generated.status, generated.stderr).toBe(0);
    expect(generated.stdout).toContain("nats:ops");
    const files = keySetFiles(directory);
    const config = await readFile(files.natsConfig, "utf8");
    expect(config).toContain('host: "0.0.0.0"');
    expect(config).toContain('store_dir: "/data"');
    for (const identity of ["wallet", "gift", "pk", "discount", "order", "gateway", "ops"]) {
      expect(config).toContain(`# ${identity}\n`);
      expect(config).not.toContain(await readFile(files.natsSeed(identity), "utf8"));
    }
    const checked = spawnSync("nats-server", ["-t", "-c", files.natsConfig], { encoding: "utf8" });
    expect(checked.status, checked.stderr).toBe(0);
  });

  it("generates the key set into .data/keys once and reuses it", async () => {
    const root = await temporaryRoot();
    const first = await prepareKeys(root, [wallet, gateway]);
    expect(first.files.directory).toBe(path.join(root, ".data/keys"));
    expect(first.created).toHaveLength(3);
    const walletKey = await readFile(first.files.service("wallet"), "utf8");
    const again = await prepareKeys(root, [wallet, gateway]);
    expect(again.created).toEqual([]);
    expect(await readFile(again.files.service("wallet"), "utf8")).toBe(walletKey);
  });
});

describe("infrastructure config", () => {
  it("defaults both URLs and takes them from the environment", () => {
    expect(readInfraConfig({})).toEqual({ databaseUrl: defaultDatabaseUrl, natsUrl: defaultNatsUrl });
    expect(readInfraConfig({ DATABASE_URL: "postgres://h:1/d", NATS_URL: "nats://h:2" })).toEqual({
      databaseUrl: "postgres://h:1/d",
      natsUrl: "nats://h:2",
    });
  });

  it("parses endpoints, database names and admin URLs", () => {
    expect(parseEndpoint(defaultDatabaseUrl, 5432)).toEqual({ host: "127.0.0.1", port: 5432 });
    expect(parseEndpoint("nats://localhost", 4222)).toEqual({ host: "localhost", port: 4222 });
    expect(parseEndpoint("postgres://[::1]:55432/x", 5432)).toEqual({ host: "::1", port: 55432 });
    expect(databaseNameOf(defaultDatabaseUrl)).toBe("ovation");
    expect(() => databaseNameOf("postgres://h:1")).toThrow("names no database");
    expect(withDatabase("postgres://u:p@h:1/ovation?sslmode=disable", "postgres")).toBe(
      "postgres://u:p@h:1/postgres?sslmode=disable",
    );
  });

  it("finds executables on PATH", async () => {
    expect(await findOnPath("node", process.env.PATH)).toBeDefined();
    expect(await findOnPath("no-such-command-ovation", process.env.PATH)).toBeUndefined();
  });

  it("aligns table columns", () => {
    expect(
      formatTable([
        ["a", "bb"],
        ["ccc", "d"],
      ]),
    ).toBe("a    bb\nccc  d");
  });
});

describe("child processes", () => {
  it("starts a fake service on its PORT, prefixes its output and stops it with SIGTERM", async () => {
    const root = await temporaryRoot();
    await writeService(
      root,
      "fake",
      { ovation: { port: await freePort(), urlEnv: "FAKE_URL" } },
      fakeServiceSource,
    );
    const [service] = await discoverServices(root);
    const settings = {
      databaseUrl: defaultDatabaseUrl,
      natsUrl: defaultNatsUrl,
      keys: keySetFiles(path.join(root, ".data/keys")),
      devTokens: false,
    };
    const stdout = new PassThrough();
    let output = "";
    stdout.on("data", (chunk) => {
      output += String(chunk);
    });

    const managed = spawnManaged(service!.name, process.execPath, [service!.entry], {
      cwd: root,
      env: buildServiceEnv(service!, [service!], settings, process.env),
      labelWidth: 4,
      stdout,
      stderr: new PassThrough(),
    });
    const endpoint = { host: "127.0.0.1", port: service!.port };

    expect(await waitForPort(endpoint, 10_000)).toBe(true);
    await stopProcesses([managed], 5_000, (message) => expect.fail(message));

    expect(managed.child.exitCode).toBe(0);
    expect(isRunning(managed)).toBe(false);
    expect(await portAcceptsConnections(endpoint)).toBe(false);
    expect(output).toContain(`[fake] listening on ${service!.port}\n`);
    expect(output).toContain("[fake] draining\n");
  });

  it("kills a service that ignores SIGTERM once the grace period is over", async () => {
    const root = await temporaryRoot();
    await writeService(
      root,
      "stubborn",
      { ovation: { port: await freePort(), urlEnv: "X_URL" } },
      stubbornServiceSource,
    );
    const [service] = await discoverServices(root);
    const managed = spawnManaged(service!.name, process.execPath, [service!.entry], {
      cwd: root,
      env: { ...process.env, PORT: String(service!.port) },
      labelWidth: 8,
      stdout: new PassThrough(),
      stderr: new PassThrough(),
    });
    expect(await waitForPort({ host: "127.0.0.1", port: service!.port }, 10_000)).toBe(true);
    const reports: string[] = [];

    await stopProcesses([managed], 500, (message) => reports.push(message));

    expect(managed.child.signalCode).toBe("SIGKILL");
    expect(reports).toEqual(["stubborn did not stop within 500 ms of SIGTERM; sending SIGKILL"]);
  });

  it("reports a port that never opens as not ready", async () => {
    expect(await waitForPort({ host: "127.0.0.1", port: await freePort() }, 300)).toBe(false);
  });
});

describe("--cluster and --replicas", () => {
  const wallet: ServiceSpec = {
    name: "wallet",
    entry: "services/wallet/src/main.ts",
    port: 50051,
    urlEnv: "WALLET_URL",
    http: false,
  };
  const gateway: ServiceSpec = {
    name: "gateway",
    entry: "services/gateway/src/main.ts",
    port: 8080,
    urlEnv: "GATEWAY_URL",
    http: true,
    managementPort: 8081,
  };

  it("parses the flags and refuses anything else", () => {
    const none = { cluster: false, replicas: 1, ha: false, pgbouncer: false };
    expect(parseUpArguments([])).toEqual(none);
    // The cluster profile runs PgBouncer too (0043), but not in front of a formation that fails over.
    expect(parseUpArguments(["--cluster", "--replicas", "2"])).toEqual({
      ...none,
      cluster: true,
      replicas: 2,
      pgbouncer: true,
    });
    expect(parseUpArguments(["--cluster", "--ha"])).toEqual({ ...none, cluster: true, ha: true });
    expect(parseUpArguments(["--ha"])).toEqual({ ...none, ha: true });
    expect(parseUpArguments(["--replicas=3"])).toEqual({ ...none, replicas: 3 });
    expect(parseUpArguments(["--pgbouncer"])).toEqual({ ...none, pgbouncer: true });
    expect(() => parseUpArguments(["--ha", "--pgbouncer"])).toThrow(
      "--pgbouncer cannot front the failover formation",
    );
    for (const argv of [["--replicas", "0"], ["--replicas", "9"], ["--replicas", "1.5"], ["--replicas"]])
      expect(() => parseUpArguments(argv)).toThrow("--replicas takes a whole number from 1 to 8");
    expect(() => parseUpArguments(["--clustr"])).toThrow("unknown argument --clustr");
  });

  it("puts replica k on ports k × 100 higher, calling replica k of the others, with the cluster's replicas", () => {
    const second = replicaSet([wallet, gateway], 1);
    expect(second.map((service) => service.port)).toEqual([50151, 8180]);
    expect(second[1]!.managementPort).toBe(8181);
    expect(replicaLabel(second[0]!, 1, 2)).toBe("wallet-2");
    expect(replicaLabel(wallet, 0, 1)).toBe("wallet");
    const settings = {
      databaseUrl: defaultDatabaseUrl,
      natsUrl: clusterUrl,
      keys: keySetFiles("/keys"),
      devTokens: false,
      natsReplicas: 3,
    };
    expect(buildServiceEnv(second[1]!, second, settings, { NATS_REPLICAS: "1" })).toMatchObject({
      PORT: "8180",
      MANAGEMENT_PORT: "8181",
      WALLET_URL: "http://127.0.0.1:50151",
      GATEWAY_URL: "http://127.0.0.1:8180",
      NATS_URL: "nats://127.0.0.1:4250,nats://127.0.0.1:4251,nats://127.0.0.1:4252",
      NATS_REPLICAS: "3",
    });
    // Without --cluster the shell's NATS_REPLICAS (for a cluster of one's own) passes through.
    const single = { ...settings, natsReplicas: undefined };
    expect(buildServiceEnv(wallet, [wallet], single, { NATS_REPLICAS: "3" }).NATS_REPLICAS).toBe("3");
  });

  it("points DATABASE_URL at the service's PgBouncer pool and DATABASE_DIRECT_URL at Postgres with --pgbouncer", () => {
    const settings = {
      databaseUrl: "postgres://postgres@127.0.0.1:5432/ovation?host=/var/run/postgresql",
      natsUrl: defaultNatsUrl,
      keys: keySetFiles("/keys"),
      devTokens: false,
    };
    const pooled = buildServiceEnv(
      wallet,
      [wallet],
      { ...settings, pgBouncer: { host: "127.0.0.1", port: 6432 } },
      {},
    );
    expect(pooled).toMatchObject({
      DATABASE_URL: "postgres://postgres@127.0.0.1:6432/ovation__wallet",
      DATABASE_DIRECT_URL: settings.databaseUrl,
    });
    // Without it the shell's DATABASE_DIRECT_URL would contradict the DATABASE_URL `up` gives.
    const direct = buildServiceEnv(wallet, [wallet], settings, {
      DATABASE_DIRECT_URL: "postgres://elsewhere/x",
    });
    expect(direct.DATABASE_URL).toBe(settings.databaseUrl);
    expect(direct.DATABASE_DIRECT_URL).toBeUndefined();
  });

  it("reads every server of a cluster's NATS_URL, and gives dev tokens only when all are on this machine", () => {
    expect(natsEndpoints("nats://127.0.0.1:4250, 127.0.0.1:4251,nats://localhost")).toEqual([
      { host: "127.0.0.1", port: 4250 },
      { host: "127.0.0.1", port: 4251 },
      { host: "localhost", port: 4222 },
    ]);
    expect(resolveDevTokens({ databaseUrl: defaultDatabaseUrl, natsUrl: clusterUrl }, {}).enabled).toBe(true);
    const partlyRemote = `${clusterUrl},nats://nats.prod.example:4222`;
    expect(resolveDevTokens({ databaseUrl: defaultDatabaseUrl, natsUrl: partlyRemote }, {}).enabled).toBe(
      false,
    );
  });

  it("renders three node configurations that nats-server accepts, routed to each other with a password of their own", async () => {
    const root = await temporaryRoot();
    const { files } = await prepareKeys(root, [wallet, gateway]);
    const publicKeys = readNatsPublicKeys(files.directory, ["wallet", "gateway", "ops"]);
    await writeClusterConfigs(root, { prefix: "", publicKeys });
    const configs = await Promise.all(
      clusterNodes.map((node) => readFile(path.join(root, node.configFile), "utf8")),
    );
    const passwordOf = (config: string) => /password: "([0-9a-f]+)"/.exec(config)?.[1];
    expect(new Set(configs.map(passwordOf)).size).toBe(1);
    for (const [index, node] of clusterNodes.entries()) {
      const file = path.join(root, node.configFile);
      // The routes' password is in it: readable by its owner only.
      expect((await stat(file)).mode & 0o777).toBe(0o600);
      expect(configs[index]).toContain(`server_name: "${node.name}"`);
      expect(configs[index]).toContain(`port: ${node.clientPort}`);
      for (const other of clusterNodes) expect(configs[index]).toContain(`@127.0.0.1:${other.routePort}"`);
      const checked = spawnSync("nats-server", ["-t", "-c", file], { encoding: "utf8" });
      expect(checked.status, checked.stderr).toBe(0);
    }
    await writeClusterConfigs(root, { prefix: "", publicKeys });
    const again = await readFile(path.join(root, clusterNodes[0]!.configFile), "utf8");
    expect(passwordOf(again)).not.toBe(passwordOf(configs[0]!));
  });
});
