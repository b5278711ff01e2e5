// What a set of NetworkPolicies lets through, evaluated the way the Kubernetes API defines it:
// a pod selected by no policy of a direction is open in that direction; a selected pod accepts
// (or sends) a connection when some rule of some policy selecting it allows the peer and the
// port. A connection needs the sender's egress and the receiver's ingress.

export interface LabelSelector {
  matchLabels?: Record<string, string>;
  matchExpressions?: { key: string; operator: string; values?: string[] }[];
}

interface Peer {
  podSelector?: LabelSelector;
  namespaceSelector?: LabelSelector;
  ipBlock?: { cidr: string; except?: string[] };
}

interface Rule {
  ports?: { protocol?: string; port?: number | string }[];
  from?: Peer[];
  to?: Peer[];
}

export interface NetworkPolicySpec {
  podSelector: LabelSelector;
  policyTypes?: string[];
  ingress?: Rule[];
  egress?: Rule[];
}

export interface NetworkPolicy {
  metadata: { name: string; namespace?: string };
  spec: NetworkPolicySpec;
}

/** A pod (or an address outside the cluster, when `labels` is undefined). */
export interface Endpoint {
  namespace?: string;
  namespaceLabels?: Record<string, string>;
  labels?: Record<string, string>;
}

export interface Connection {
  from: Endpoint;
  to: Endpoint;
  port: number;
  protocol?: "TCP" | "UDP";
}

export function matchesSelector(selector: LabelSelector, labels: Record<string, string>): boolean {
  for (const [key, value] of Object.entries(selector.matchLabels ?? {}))
    if (labels[key] !== value) return false;
  return (selector.matchExpressions ?? []).every(({ key, operator, values = [] }) => {
    switch (operator) {
      case "In":
        return key in labels && values.includes(labels[key]!);
      case "NotIn":
        return !(key in labels) || !values.includes(labels[key]!);
      case "Exists":
        return key in labels;
      case "DoesNotExist":
        return !(key in labels);
      default:
        throw new Error(`unknown label selector operator ${operator}`);
    }
  });
}

/** True when `policies` (all in `namespace`) let the connection through in both directions. */
export function allows(
  policies: readonly NetworkPolicy[],
  namespace: string,
  connection: Connection,
): boolean {
  return (
    allowsDirection(policies, namespace, "Egress", connection.from, connection.to, connection) &&
    allowsDirection(policies, namespace, "Ingress", connection.to, connection.from, connection)
  );
}

function allowsDirection(
  policies: readonly NetworkPolicy[],
  namespace: string,
  direction: "Ingress" | "Egress",
  subject: Endpoint,
  peer: Endpoint,
  connection: Connection,
): boolean {
  // Outside the cluster nothing applies; policies select pods of their own namespace only.
  if (subject.labels === undefined || subject.namespace !== namespace) return true;
  const selecting = policies.filter(
    (policy) =>
      policyTypesOf(policy.spec).includes(direction) &&
      matchesSelector(policy.spec.podSelector, subject.labels!),
  );
  if (selecting.length === 0) return true;
  return selecting.some((policy) =>
    (direction === "Ingress" ? policy.spec.ingress : policy.spec.egress)?.some(
      (rule) =>
        portMatches(rule, connection) &&
        peersMatch(direction === "Ingress" ? rule.from : rule.to, peer, namespace),
    ),
  );
}

/** A rule without peers (absent or empty) matches every peer. */
function peersMatch(peers: Peer[] | undefined, endpoint: Endpoint, namespace: string): boolean {
  return (
    peers === undefined || peers.length === 0 || peers.some((peer) => peerMatches(peer, endpoint, namespace))
  );
}

/** policyTypes defaults to Ingress, plus Egress when the policy has egress rules. */
function policyTypesOf(spec: NetworkPolicySpec): string[] {
  return spec.policyTypes ?? ["Ingress", ...(spec.egress === undefined ? [] : ["Egress"])];
}

function portMatches(rule: Rule, connection: Connection): boolean {
  if (rule.ports === undefined || rule.ports.length === 0) return true;
  return rule.ports.some((port) => {
    if (typeof port.port === "string") throw new Error(`named port ${port.port}: use the number here`);
    return (
      (port.protocol ?? "TCP") === (connection.protocol ?? "TCP") &&
      (port.port === undefined || port.port === connection.port)
    );
  });
}

function peerMatches(peer: Peer, endpoint: Endpoint, namespace: string): boolean {
  if (peer.ipBlock !== undefined) return endpoint.labels === undefined;
  if (endpoint.labels === undefined) return false;
  const namespaceMatches =
    peer.namespaceSelector === undefined
      ? endpoint.namespace === namespace
      : matchesSelector(peer.namespaceSelector, endpoint.namespaceLabels ?? {});
  return (
    namespaceMatches && (peer.podSelector === undefined || matchesSelector(peer.podSelector, endpoint.labels))
  );
}
