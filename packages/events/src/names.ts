// Stream names, subjects and headers. A deployment (or one test run) on shared servers is
// isolated by a prefix: streams "T1A2B_GIFT", subjects "t1a2b.gift.gift.sent". Without a prefix
// the names are the plain ones from the architecture ("GIFT", "gift.gift.sent").

/** Every producing domain has one stream; the DLQ stream captures their advisories. */
export const domains = ["WALLET", "GIFT", "PK", "DISCOUNT", "ORDER"] as const;
export type Domain = (typeof domains)[number];

export const dlqStream = "DLQ";

/** Message headers we set; Nats-Msg-Id is set by JetStream's msgID publish option. */
export const headerNames = {
  eventId: "Ovation-Event-Id",
  eventType: "Ovation-Event-Type",
  traceParent: "traceparent",
  dlqStream: "Ovation-Dlq-Stream",
  dlqConsumer: "Ovation-Dlq-Consumer",
  dlqStreamSequence: "Ovation-Dlq-Stream-Sequence",
  dlqSubject: "Ovation-Dlq-Subject",
  dlqDeliveries: "Ovation-Dlq-Deliveries",
  dlqReason: "Ovation-Dlq-Reason",
  dlqDeadAt: "Ovation-Dlq-Dead-At",
} as const;

export class Names {
  readonly prefix: string;

  constructor(prefix: string) {
    if (!/^[a-z0-9]*$/.test(prefix))
      throw new Error(`invalid prefix ${prefix}: lower-case letters and digits only`);
    this.prefix = prefix;
  }

  stream(name: string): string {
    return this.prefix === "" ? name : `${this.prefix.toUpperCase()}_${name}`;
  }

  subject(subject: string): string {
    return this.prefix === "" ? subject : `${this.prefix}.${subject}`;
  }

  /** The subject as the domain knows it, without the deployment prefix. */
  unprefixed(subject: string): string {
    return this.prefix === "" ? subject : subject.slice(this.prefix.length + 1);
  }

  /** Subjects of a domain's stream, for example "gift.>". */
  domainSubjects(domain: Domain): string[] {
    return [this.subject(`${domain.toLowerCase()}.>`)];
  }

  dlqEntrySubject(consumer: string): string {
    return this.subject(`dlq.${consumer}`);
  }

  dlqEntrySubjects(): string {
    return this.subject("dlq.>");
  }

  /**
   * Consumer advisories captured by the DLQ stream, one subject per domain stream. It takes
   * every kind (the movers act only on max deliveries and terminated messages) because
   * nats-server 2.9 wants a consumer filter to be a subset of one stream subject, and each
   * mover filters on "<any kind>.<stream>.<its consumer>".
   */
  advisorySubjects(): string[] {
    return domains.map((domain) => `$JS.EVENT.ADVISORY.CONSUMER.*.${this.stream(domain)}.*`);
  }

  /** Advisories about one consumer, whatever their kind. */
  consumerAdvisories(stream: string, consumer: string): string {
    return `$JS.EVENT.ADVISORY.CONSUMER.*.${stream}.${consumer}`;
  }
}
