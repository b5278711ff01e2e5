// Stream names, subjects and headers. A deployment (or one test run) on shared servers is
// isolated by a prefix: streams "T1A2B_GIFT", subjects "t1a2b.gift.gift.sent". Without a prefix
// the names are the plain ones from the architecture ("GIFT", "gift.gift.sent").

/** Every producing domain has one stream. */
export const domains = ["WALLET", "GIFT", "PK", "DISCOUNT", "ORDER"] as const;
export type Domain = (typeof domains)[number];

/** The domain whose stream stores an (unprefixed) subject: "gift.gift.sent" → GIFT. */
export function domainOfSubject(subject: string): Domain | undefined {
  return domains.find((domain) => subject.startsWith(`${domain.toLowerCase()}.`));
}

/** Dead-letter entries, and nothing else: no age limit, and a full stream refuses new ones. */
export const dlqStream = "DLQ";
/**
 * The server's dead-letter advisories (max deliveries reached, message terminated) of every
 * domain stream, kept so that none is lost while no mover runs. Only those two kinds: the much
 * noisier NAK and ack advisories are not captured at all.
 */
export const advisoryStream = "DLQ_ADVISORIES";

/** Advisory kinds that mean a consumer gave up on a message. */
export const deadLetterAdvisoryKinds = ["MAX_DELIVERIES", "MSG_TERMINATED"] as const;

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

  /** The stream as the domain knows it: "T1A2B_GIFT" → "GIFT". */
  unprefixedStream(stream: string): string {
    return this.prefix === "" ? stream : stream.slice(this.prefix.length + 1);
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

  /**
   * Where the dead letter of one message lives: one subject per message, so whether it was
   * already moved is a lookup by subject that works for ever, not only inside the stream's
   * duplicate window. `stream` is the full (prefixed) stream name.
   */
  dlqEntrySubject(stream: string, consumer: string, streamSequence: number): string {
    return this.subject(`dlq.${this.unprefixedStream(stream).toLowerCase()}.${consumer}.${streamSequence}`);
  }

  /**
   * Every entry subject: exactly three tokens after "dlq", so the DLQ stream does not capture
   * the replay requests on "dlq.replay.<consumer>" (two tokens), which are core NATS requests.
   */
  dlqEntrySubjects(): string {
    return this.subject("dlq.*.*.*");
  }

  /** What every entry subject starts with. */
  dlqEntryPrefix(): string {
    return this.subject("dlq.");
  }

  /**
   * Where the DLQ admin asks consumer `consumer` to process a dead-lettered message again; its
   * runners answer in a queue group, so one replica does it (consumer.ts, dlq.ts).
   */
  dlqReplaySubject(consumer: string): string {
    return this.subject(`dlq.replay.${consumer}`);
  }

  /**
   * Where a consumer answers one replay request (`id` unique per request): a subject of its own
   * rather than the admin's inbox, so consumers need no `allow_responses`, which makes the
   * server track a reply right for every message it delivers (measured: a third of the
   * wallet's host-credit throughput). Not captured by the DLQ stream (two tokens after "dlq").
   */
  dlqReplayAnswerSubject(id: string): string {
    return this.subject(`dlq.answer.${id}`);
  }

  /**
   * The inbox prefix of an identity on the bus (the connect option `inboxPrefix`): replies and
   * pulled messages arrive below it, and the identity may subscribe there and nowhere else, so
   * no process can read another's replies.
   */
  inboxPrefix(identity: string): string {
    return `_INBOX.${this.subject(identity)}`;
  }

  /** The dead-letter advisories of every domain stream, captured by the advisory stream. */
  advisorySubjects(): string[] {
    return domains.flatMap((domain) =>
      deadLetterAdvisoryKinds.map((kind) => `$JS.EVENT.ADVISORY.CONSUMER.${kind}.${this.stream(domain)}.*`),
    );
  }
}
