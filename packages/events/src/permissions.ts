// Who may do what on the bus: the one table nats-server's own authorization is rendered from
// (decision 0021). Every process connects as an identity (a service's name, or `ops` for the
// operator commands and tests) with its own nkey; the server holds each identity's public key
// and the permissions below, so a process that reaches NATS can publish only its own domain's
// events and can read only its own replies, whatever its code does.
//
// Adding a durable consumer: add its name under its service and stream in `busGrants`. A runner
// whose name is missing refuses to start (ConsumerRunner.start), so every test that starts the
// service fails until the table knows it. Adding a service: add an entry (its identity is its
// name, as in SERVICE_KEY_FILE); `./ov keys generate` writes its seed.
//
// This file imports nothing but names.ts: the test kit renders the server configuration from it.
import { advisoryStream, type Domain, dlqStream, domainOfSubject, domains, Names } from "./names.ts";

/** A stream by its unprefixed name. */
export type StreamName = Domain | typeof dlqStream | typeof advisoryStream;

/** What one identity may do on the bus, in unprefixed names. */
export interface BusGrant {
  /** Event subjects it publishes (NATS wildcards allowed), for example "order.>". */
  publishes: readonly string[];
  /** Subjects it must never publish even where `publishes` covers them. */
  neverPublishes?: readonly string[];
  /** Streams whose configuration it updates at start-up; it only creates the others if missing. */
  owns: readonly StreamName[];
  /** Its durable consumers, by stream. Each one may also be asked to replay a dead letter. */
  durables: Readonly<Partial<Record<StreamName, readonly string[]>>>;
  /**
   * Streams it follows live with ephemeral consumers (ephemeral.ts). Their names are random, so
   * the consumer token is `*` on these streams, minus every durable of the table it does not own.
   */
  follows: readonly Domain[];
  /** The DLQ admin (DlqService, `./ov dlq`): reads and deletes entries, asks consumers to replay. */
  dlqAdmin?: boolean;
}

/** Every durable consumer's process also runs a share of this one, on the advisory stream. */
export const sharedDlqMover = "dlq-mover";

/**
 * The table. Subjects each service publishes come from its outbox (services/<name>/src/app/
 * messages.ts); the wallet's outbox also carries the events other services hand it with a
 * transfer, of which only GiftSent exists (BoostPurchased is a wallet subject).
 */
export const busGrants = {
  wallet: {
    publishes: ["wallet.>", "gift.gift.sent"],
    owns: ["WALLET", dlqStream, advisoryStream],
    durables: {
      GIFT: ["wallet-host-credit"],
      DISCOUNT: ["wallet-promotion-credit"],
      ORDER: ["wallet-purchase-credit"],
    },
    follows: [],
    dlqAdmin: true,
  },
  gift: {
    publishes: ["gift.>"],
    // Only the wallet publishes GiftSent, in the transaction of the debit that pays for it.
    neverPublishes: ["gift.gift.sent"],
    owns: ["GIFT"],
    durables: { GIFT: ["gift-log"], WALLET: ["gift-discovery"] },
    follows: ["GIFT"],
  },
  pk: {
    publishes: ["pk.>"],
    owns: ["PK"],
    durables: {
      GIFT: ["pk-score", "pk-room-started", "pk-room-ended"],
      WALLET: ["pk-side-boosts"],
    },
    follows: [],
  },
  discount: {
    publishes: ["discount.>"],
    owns: ["DISCOUNT"],
    durables: { WALLET: ["discount-credits"] },
    follows: ["DISCOUNT"],
  },
  order: {
    publishes: ["order.>"],
    owns: ["ORDER"],
    durables: {
      ORDER: [
        "inventory-reserve",
        "inventory-release",
        "inventory-commit",
        "order-inventory-reserved",
        "order-inventory-failed",
        "order-payment-succeeded",
        "order-payment-failed",
        "payment-pay",
        "payment-refund",
        "payment-release",
      ],
    },
    follows: [],
  },
  gateway: {
    // It only consumes: WebSocket feeds and notifications.
    publishes: [],
    owns: [],
    durables: { WALLET: ["gateway-boost-notifications", "gateway-credit-notifications"] },
    follows: ["GIFT", "WALLET", "PK", "DISCOUNT", "ORDER"],
  },
} as const satisfies Record<string, BusGrant>;

export type ServiceIdentity = keyof typeof busGrants;
/** `ops`: the operator commands and tests, allowed everything. */
export const opsBusIdentity = "ops";
export type BusIdentity = ServiceIdentity | typeof opsBusIdentity;

/** Every identity the server configuration knows, in table order, `ops` last. */
export const busIdentities: readonly BusIdentity[] = [
  ...(Object.keys(busGrants) as ServiceIdentity[]),
  "ops",
];

export const isBusIdentity = (name: string): name is BusIdentity =>
  name === opsBusIdentity || Object.hasOwn(busGrants, name);

const grantOf = (identity: ServiceIdentity): BusGrant => busGrants[identity];

/** Durable consumer names of an identity on `stream`, the shared mover included. */
function durablesOn(identity: ServiceIdentity, stream: StreamName): readonly string[] {
  const grant = grantOf(identity);
  const own = grant.durables[stream] ?? [];
  return stream === advisoryStream && consumesEvents(grant) ? [...own, sharedDlqMover] : own;
}

/** Identities with durable consumers write dead letters and run the shared DLQ mover. */
const consumesEvents = (grant: BusGrant) => Object.values(grant.durables).some((names) => names.length > 0);

/** True when `identity` may run durable consumer `name` on `stream` (ops may run any). */
export function mayRunDurable(identity: BusIdentity, stream: StreamName, name: string): boolean {
  return identity === opsBusIdentity || durablesOn(identity, stream).includes(name);
}

/**
 * The streams an identity touches (it creates them when missing) and those it owns (it also
 * updates them); undefined for `ops`, which ensures all.
 */
export function streamsOf(identity: BusIdentity): { touches: StreamName[]; owns: StreamName[] } | undefined {
  if (identity === opsBusIdentity) return undefined;
  const grant = grantOf(identity);
  const touched = new Set<StreamName>(grant.owns);
  for (const subject of grant.publishes) {
    const stream = domainOfSubject(subject);
    if (stream !== undefined) touched.add(stream);
  }
  for (const stream of Object.keys(grant.durables) as StreamName[]) touched.add(stream);
  for (const stream of grant.follows) touched.add(stream);
  if (consumesEvents(grant)) {
    touched.add(dlqStream);
    touched.add(advisoryStream);
  }
  if (grant.dlqAdmin) touched.add(dlqStream);
  return { touches: [...touched], owns: [...grant.owns] };
}

/** The permissions of one user in nats-server's terms, with prefixed names. */
export interface UserPermissions {
  publish: { allow: string[]; deny: string[] };
  subscribe: { allow: string[] };
}

const api = "$JS.API";

/** What `identity` may publish and subscribe in the deployment with `prefix`. */
export function busPermissions(identity: BusIdentity, prefix: string): UserPermissions {
  if (identity === opsBusIdentity) {
    return { publish: { allow: [">"], deny: [] }, subscribe: { allow: [">"] } };
  }
  const names = new Names(prefix);
  const grant = grantOf(identity);
  const streams = streamsOf(identity)!;
  const stream = (name: StreamName) => names.stream(name);
  const allow = new Set<string>();
  const deny = new Set<string>();
  const subscribe = new Set<string>([`${names.inboxPrefix(identity)}.>`]);

  for (const subject of grant.publishes) allow.add(names.subject(subject));
  for (const subject of grant.neverPublishes ?? []) deny.add(names.subject(subject));
  // jetstreamManager() asks for the account's JetStream info first.
  allow.add(`${api}.INFO`);
  for (const name of streams.touches) {
    allow.add(`${api}.STREAM.INFO.${stream(name)}`);
    allow.add(`${api}.STREAM.CREATE.${stream(name)}`);
  }
  for (const name of streams.owns) allow.add(`${api}.STREAM.UPDATE.${stream(name)}`);

  const consumed = new Set<StreamName>([...(Object.keys(grant.durables) as StreamName[]), advisoryStream]);
  for (const name of consumed) {
    for (const durable of durablesOn(identity, name)) {
      for (const subject of durableSubjects(stream(name), durable)) allow.add(subject);
      if (durable !== sharedDlqMover) subscribe.add(names.dlqReplaySubject(durable));
    }
  }
  for (const name of grant.follows) {
    for (const subject of ephemeralSubjects(stream(name), "*")) allow.add(subject);
    // `*` would reach every other identity's durables on the stream: those stay out of reach.
    for (const other of busIdentities) {
      if (other === identity || other === opsBusIdentity) continue;
      for (const durable of durablesOn(other, name)) {
        if (durablesOn(identity, name).includes(durable)) continue;
        for (const subject of ephemeralSubjects(stream(name), durable)) {
          if (!subject.includes(".INFO.")) deny.add(subject);
        }
      }
    }
  }

  if (consumesEvents(grant)) {
    // Dead letters: entries on the DLQ stream, the lookup that keeps writing idempotent, and
    // the originals the shared mover copies from any domain stream (and a runner re-reads to
    // replay one).
    allow.add(names.dlqEntrySubjects());
    allow.add(`${api}.STREAM.MSG.GET.${stream(dlqStream)}`);
    for (const domain of domains) allow.add(`${api}.STREAM.MSG.GET.${stream(domain)}`);
    // Runners answer replay requests on the admin's answer subjects, not its inbox.
    allow.add(names.dlqReplayAnswerSubject("*"));
  }
  if (grant.dlqAdmin) {
    allow.add(`${api}.STREAM.MSG.GET.${stream(dlqStream)}`);
    allow.add(`${api}.STREAM.MSG.DELETE.${stream(dlqStream)}`);
    allow.add(names.dlqReplaySubject("*"));
    subscribe.add(names.dlqReplayAnswerSubject("*"));
  }
  if (streams.owns.includes(dlqStream)) {
    // The first DLQ design's per-consumer movers lived on the DLQ stream; its owner removes
    // them (bus.ts). The stream has no other consumers.
    allow.add(`${api}.CONSUMER.LIST.${stream(dlqStream)}`);
    allow.add(`${api}.CONSUMER.DELETE.${stream(dlqStream)}.*`);
  }
  return {
    publish: { allow: [...allow], deny: [...deny] },
    // No `allow_responses`: it makes the server track a reply right for every message it
    // delivers (two thirds of the wallet's host-credit throughput, measured); replay answers
    // have subjects of their own (names.ts dlqReplayAnswerSubject).
    subscribe: { allow: [...subscribe] },
  };
}

/** The `cluster` block of a node: routes to every node, each presenting the routes' credentials. */
function renderCluster(cluster: NatsClusterOptions): string[] {
  const quote = (value: string) => JSON.stringify(value);
  const { user, password } = cluster.routeCredentials;
  if (!/^[A-Za-z0-9_-]+$/.test(user) || !/^[A-Za-z0-9_-]+$/.test(password))
    throw new Error("route user and password: letters, digits, _ and - only (they go into route URLs)");
  const routes = cluster.routes.map((route) =>
    quote(`nats-route://${user}:${password}@${route.host}:${route.port}`),
  );
  return [
    "cluster {",
    `  name: ${quote(cluster.name)}`,
    `  listen: ${quote(`${cluster.host}:${cluster.port}`)}`,
    `  authorization { user: ${quote(user)}, password: ${quote(password)} }`,
    `  routes: [${routes.join(", ")}]`,
    "}",
  ];
}

/** Create (both API forms), look up, pull from and acknowledge one durable consumer. */
function durableSubjects(stream: string, consumer: string): string[] {
  return [
    `${api}.CONSUMER.CREATE.${stream}.${consumer}`,
    `${api}.CONSUMER.CREATE.${stream}.${consumer}.>`,
    `${api}.CONSUMER.DURABLE.CREATE.${stream}.${consumer}`,
    `${api}.CONSUMER.INFO.${stream}.${consumer}`,
    `${api}.CONSUMER.MSG.NEXT.${stream}.${consumer}`,
    `$JS.ACK.${stream}.${consumer}.>`,
  ];
}

/** Create, look up, pull from and delete an ephemeral consumer (no acks: AckPolicy.None). */
function ephemeralSubjects(stream: string, consumer: string): string[] {
  return [
    `${api}.CONSUMER.CREATE.${stream}.${consumer}`,
    `${api}.CONSUMER.CREATE.${stream}.${consumer}.>`,
    `${api}.CONSUMER.INFO.${stream}.${consumer}`,
    `${api}.CONSUMER.MSG.NEXT.${stream}.${consumer}`,
    `${api}.CONSUMER.DELETE.${stream}.${consumer}`,
  ];
}

export interface NatsServerConfigOptions {
  /** The deployment prefix (OVATION_PREFIX); "" for the plain names. */
  prefix: string;
  /** Public nkey (U…) per identity. An identity without one cannot connect. */
  publicKeys: ReadonlyMap<string, string>;
  host: string;
  /** Client port; -1 lets the server choose (it logs the port it listens on). */
  port: number;
  /** JetStream store directory. */
  storeDirectory: string;
  /** Set for a node of a JetStream cluster. */
  cluster?: NatsClusterOptions;
}

/** One node's part of a cluster: its name, where it listens for routes, where the others are. */
export interface NatsClusterOptions {
  /** The cluster's name, the same on every node. */
  name: string;
  /** This node's name, unique in the cluster (JetStream places replicas by it). */
  serverName: string;
  /** Where this node listens for routes from the others. */
  host: string;
  port: number;
  /** The route address of every node; a node ignores the route to itself. */
  routes: readonly { host: string; port: number }[];
  /**
   * What every route presents and accepts, so that only the cluster's own nodes join it: a route
   * is trusted like the server itself, past every user's permissions. A secret: a configuration
   * holding it must be readable by its server only.
   */
  routeCredentials: { user: string; password: string };
}

const publicNkeyPattern = /^U[A-Z2-7]{55}$/;

/**
 * A nats-server configuration: JetStream, no anonymous access, and one nkey user per identity
 * with its permissions. It holds public keys only, so it may be shown and shipped freely; the
 * configuration of a cluster node also holds its routes' password (`cluster`).
 */
export function renderNatsServerConfig(options: NatsServerConfigOptions): string {
  const quote = (value: string) => JSON.stringify(value);
  const list = (values: readonly string[]) => `[${values.map(quote).join(", ")}]`;
  const users: string[] = [];
  for (const [identity, publicKey] of options.publicKeys) {
    if (!isBusIdentity(identity))
      throw new Error(
        `no bus permissions for identity ${identity}: add it to packages/events/src/permissions.ts`,
      );
    if (!publicNkeyPattern.test(publicKey))
      throw new Error(`identity ${identity}: ${publicKey} is not a public user nkey (U…)`);
    const permissions = busPermissions(identity, options.prefix);
    const publish = [`allow: ${list(permissions.publish.allow)}`];
    if (permissions.publish.deny.length > 0) publish.push(`deny: ${list(permissions.publish.deny)}`);
    users.push(
      [
        `    # ${identity}`,
        "    {",
        `      nkey: ${quote(publicKey)}`,
        "      permissions: {",
        `        publish: { ${publish.join(", ")} }`,
        `        subscribe: { allow: ${list(permissions.subscribe.allow)} }`,
        "      }",
        "    }",
      ].join("\n"),
    );
  }
  return [
    `# nats-server configuration for Ovation${options.prefix === "" ? "" : ` (prefix ${options.prefix})`}.`,
    "# Rendered from packages/events/src/permissions.ts and the identities' public nkeys: it holds",
    "# no secret. Do not edit: render it again (./ov keys generate, ./ov up, the test kit).",
    `host: ${quote(options.host)}`,
    `port: ${options.port}`,
    ...(options.cluster === undefined ? [] : [`server_name: ${quote(options.cluster.serverName)}`]),
    "jetstream {",
    `  store_dir: ${quote(options.storeDirectory)}`,
    "}",
    ...(options.cluster === undefined ? [] : renderCluster(options.cluster)),
    "authorization {",
    "  users = [",
    users.join("\n"),
    "  ]",
    "}",
    "",
  ].join("\n");
}
