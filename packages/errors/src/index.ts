// One error model for every domain. A domain declares its operating errors once, as a closed
// table of codes, each with the kind of failure it is; the kinds are the Connect code names a
// caller acts on (retry, fix the request, give up), so a refusal means the same thing whichever
// service raised it. Domain code throws these and imports no transport: packages/server maps a
// kind to a Connect code (and the gateway a Connect code to an HTTP status) in one place each.
//
//   export const LedgerError = defineErrors("ledger", {
//     insufficient_funds: "failed_precondition",
//     idempotency_conflict: "already_exists",
//   });
//   export type LedgerError = InstanceType<typeof LedgerError>;
//   throw new LedgerError("insufficient_funds", "insufficient funds");
//
// Programmer errors (a broken invariant) stay plain Errors: they are bugs, and answer INTERNAL.

/** What a failure means to the caller; the Connect code names, in the protocol's spelling. */
export const errorKinds = [
  "invalid_argument",
  "not_found",
  "already_exists",
  "permission_denied",
  "unauthenticated",
  "failed_precondition",
  "out_of_range",
  "resource_exhausted",
  "aborted",
  "unavailable",
  "deadline_exceeded",
] as const;

export type ErrorKind = (typeof errorKinds)[number];

export interface DomainErrorOptions {
  /** Facts a client may act on, for example `{ retryAfterMs: "1000" }` or the limit hit. */
  details?: Readonly<Record<string, string>>;
  /** For kinds a client should retry later: when (the gRPC retry pushback, HTTP Retry-After). */
  retryAfterMs?: number | undefined;
  cause?: unknown;
}

const codePattern = /^[a-z][a-z0-9_]{0,62}$/;

/** An operating error of one domain: a code from its closed table, a kind, a message, details. */
export class DomainError<Code extends string = string> extends Error {
  /** The domain that raised it, for example "ledger". */
  readonly domain: string;
  readonly code: Code;
  readonly kind: ErrorKind;
  readonly details: Readonly<Record<string, string>>;
  readonly retryAfterMs: number | undefined;

  constructor(
    domain: string,
    code: Code,
    kind: ErrorKind,
    message: string,
    options: DomainErrorOptions = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.domain = domain;
    this.code = code;
    this.kind = kind;
    this.details = options.details ?? {};
    this.retryAfterMs = options.retryAfterMs;
  }
}

export const isDomainError = (error: unknown): error is DomainError => error instanceof DomainError;

/**
 * The error class of one domain. Its codes are the table's keys (snake case, checked by the
 * compiler at every `new`), and each code's kind is fixed here, once.
 */
export function defineErrors<const Table extends Readonly<Record<string, ErrorKind>>>(
  domain: string,
  table: Table,
) {
  for (const code of Object.keys(table))
    if (!codePattern.test(code)) throw new Error(`error code ${domain}.${code} must be snake case`);
  const name = `${domain.charAt(0).toUpperCase()}${domain.slice(1)}Error`;
  const DomainErrorOfThisDomain = class extends DomainError<keyof Table & string> {
    override name = name;

    constructor(code: keyof Table & string, message: string, options?: DomainErrorOptions) {
      super(domain, code, table[code]!, message, options);
    }

    /** Every code of the domain with its kind (for documentation and tests). */
    static readonly codes: Readonly<Table> = table;
  };
  Object.defineProperty(DomainErrorOfThisDomain, "name", { value: name });
  return DomainErrorOfThisDomain;
}

/**
 * A bounded queue or in-flight set is full: the caller retries later with the same request
 * (guarantee 11: overload sheds). Shared by every component that bounds its work.
 */
export const OverloadError = defineErrors("capacity", { overloaded: "unavailable" });
export type OverloadError = InstanceType<typeof OverloadError>;
