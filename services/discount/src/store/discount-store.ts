// Discount persistence in plain SQL. Redemptions are claimed a batch at a time: requests from
// many callers are gathered (Batcher) and each campaign's share of a batch is one
// claim_redemptions call, all in one transaction with their outbox events. Lookups of
// redemptions by idempotency key are batched the same way, one query per batch.
import { Batcher, type BatcherLimits, type Database, type EntityManager, retryRaces } from "@ovation/db";
import { enqueueEvents, type OutboxEvent } from "@ovation/events";
import type { CampaignKind, CampaignStatus } from "@ovation/proto/gen/ovation/discount/v1/discount_pb.ts";
import type {
  CampaignReport,
  CampaignRepository,
  CampaignRow,
  ClaimOutcome,
  ClaimRequest,
  KeyedRedemption,
} from "../app/ports.ts";

type Row = Record<string, unknown>;

function campaignRow(row: Row): CampaignRow {
  return {
    id: row.id as string,
    name: row.name as string,
    kind: Number(row.kind) as CampaignKind,
    code: (row.code as string | null) ?? null,
    asset: row.asset as string,
    amount: BigInt(row.amount as string),
    redemptionLimit: BigInt(row.redemption_limit as string),
    perUserLimit: Number(row.per_user_limit),
    startsAt: new Date(row.starts_at as string),
    endsAt: new Date(row.ends_at as string),
    status: Number(row.status) as CampaignStatus,
    redeemed: BigInt(row.redeemed as string),
    createdBy: row.created_by as string,
    requestHash: row.request_hash as Buffer,
    createdAt: new Date(row.created_at as string),
  };
}

/** What claim_redemptions answers for a request that has (or had) a redemption. */
function recorded(row: Row) {
  return {
    redemptionId: row.redemption_id as string,
    position: BigInt(row.position as string),
    limit: BigInt(row.redemption_limit as string),
    at: new Date(row.redeemed_at as string),
  };
}

interface KeyLookup {
  userId: string;
  key: string;
}

export class DiscountStore implements CampaignRepository {
  readonly #orm: Database;
  readonly #claims: Batcher<ClaimRequest, ClaimOutcome>;
  readonly #keyLookups: Batcher<KeyLookup, KeyedRedemption[]>;
  /** Builds the outbox events of a batch's redemptions, inside its transaction. */
  readonly #eventsOf: (redeemed: { request: ClaimRequest; position: bigint; at: Date }[]) => OutboxEvent[];

  /** Announces the campaigns a batch touched, inside its transaction. */
  readonly #afterClaims: (em: EntityManager, campaignIds: string[]) => Promise<void>;

  constructor(
    orm: Database,
    limits: BatcherLimits,
    hooks: {
      eventsOf: (redeemed: { request: ClaimRequest; position: bigint; at: Date }[]) => OutboxEvent[];
      afterClaims: (em: EntityManager, campaignIds: string[]) => Promise<void>;
    },
  ) {
    this.#orm = orm;
    this.#eventsOf = hooks.eventsOf;
    this.#afterClaims = hooks.afterClaims;
    this.#claims = new Batcher(limits, (items) => retryRaces(() => this.#claimBatch(items)));
    this.#keyLookups = new Batcher(limits, (items) => this.#lookUpKeys(items));
  }

  fork(): EntityManager {
    return this.#orm.em.fork();
  }

  /** Redemption requests that reached the database so far (metrics, tests). */
  get claimsApplied(): number {
    return this.#claims.items;
  }

  /** Queues one redemption request; it is applied with whatever else is waiting. */
  claim(request: ClaimRequest): Promise<ClaimOutcome> {
    return this.#claims.submit(request);
  }

  async #claimBatch(requests: ClaimRequest[]): Promise<ClaimOutcome[]> {
    const now = new Date();
    const outcomes = new Map<string, ClaimOutcome>();
    await this.fork().transactional(async (em) => {
      // Campaigns in id order: two replicas' batches lock the same rows in the same order.
      const byCampaign = Map.groupBy(requests, (r) => r.campaignId);
      const redeemed: { request: ClaimRequest; position: bigint; at: Date }[] = [];
      for (const campaignId of [...byCampaign.keys()].sort()) {
        const batch = byCampaign.get(campaignId)!;
        const rows = await em.execute<Row[]>("select * from claim_redemptions(?, ?::jsonb, ?)", [
          campaignId,
          JSON.stringify(
            batch.map((r) => ({ id: r.id, user_id: r.userId, code_id: r.codeId, key: r.idempotencyKey })),
          ),
          now,
        ]);
        const requestsById = new Map(batch.map((r) => [r.id, r]));
        for (const row of rows) {
          const id = row.id as string;
          const outcome = row.outcome as string;
          if (outcome === "redeemed") {
            const redemption = recorded(row);
            outcomes.set(id, { outcome, ...redemption });
            redeemed.push({ request: requestsById.get(id)!, position: redemption.position, at: now });
          } else if (outcome === "replayed") outcomes.set(id, { outcome, ...recorded(row) });
          else if (outcome === "inactive") outcomes.set(id, { outcome, reason: row.reason as string });
          else outcomes.set(id, { outcome: outcome as "already" | "exhausted" | "conflict" });
        }
      }
      await enqueueEvents(em, this.#eventsOf(redeemed));
      await this.#afterClaims(em, [...byCampaign.keys()]);
    });
    return requests.map((r) => {
      const outcome = outcomes.get(r.id);
      if (outcome === undefined) throw new Error(`claim_redemptions left request ${r.id} unanswered`);
      return outcome;
    });
  }

  redemptionsByKey(userId: string, key: string): Promise<KeyedRedemption[]> {
    return this.#keyLookups.submit({ userId, key });
  }

  async #lookUpKeys(lookups: KeyLookup[]): Promise<KeyedRedemption[][]> {
    const rows = await this.fork().execute<Row[]>(
      `select x.idx, d.id as redemption_id, d.campaign_id, d.code_id, d.position::text, d.created_at as redeemed_at,
              c.redemption_limit::text
       from jsonb_to_recordset(?::jsonb) as x(idx int, user_id text, key text)
       join redemptions d on d.user_id = x.user_id and d.idempotency_key = x.key
       join campaigns c on c.id = d.campaign_id`,
      [JSON.stringify(lookups.map((l, idx) => ({ idx, user_id: l.userId, key: l.key })))],
    );
    const found: KeyedRedemption[][] = lookups.map(() => []);
    for (const row of rows)
      found[row.idx as number]!.push({
        ...recorded(row),
        campaignId: row.campaign_id as string,
        codeId: (row.code_id as string | null) ?? null,
      });
    return found;
  }

  async campaign(em: EntityManager, id: string): Promise<CampaignRow | null> {
    const rows = await em.execute<Row[]>("select * from campaigns where id = ?", [id]);
    return rows[0] === undefined ? null : campaignRow(rows[0]);
  }

  async campaigns(em: EntityManager, ids: readonly string[]): Promise<CampaignRow[]> {
    if (ids.length === 0) return [];
    const rows = await em.execute<Row[]>(
      "select * from campaigns where id in (select jsonb_array_elements_text(?::jsonb)::uuid)",
      [JSON.stringify(ids)],
    );
    return rows.map(campaignRow);
  }

  async lockCampaign(em: EntityManager, id: string): Promise<CampaignRow | null> {
    const rows = await em.execute<Row[]>("select * from campaigns where id = ? for update", [id]);
    return rows[0] === undefined ? null : campaignRow(rows[0]);
  }

  async campaignByCode(em: EntityManager, code: string): Promise<CampaignRow | null> {
    const rows = await em.execute<Row[]>("select * from campaigns where code = ?", [code]);
    return rows[0] === undefined ? null : campaignRow(rows[0]);
  }

  async campaignByKey(em: EntityManager, createdBy: string, key: string): Promise<CampaignRow | null> {
    const rows = await em.execute<Row[]>(
      "select * from campaigns where created_by = ? and idempotency_key = ?",
      [createdBy, key],
    );
    return rows[0] === undefined ? null : campaignRow(rows[0]);
  }

  async insertCampaign(em: EntityManager, c: CampaignRow & { idempotencyKey: string }): Promise<void> {
    await em.execute(
      `insert into campaigns (id, name, kind, code, asset, amount, redemption_limit, per_user_limit, starts_at,
         ends_at, status, created_by, idempotency_key, request_hash, created_at)
       values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      [
        c.id,
        c.name,
        c.kind,
        c.code,
        c.asset,
        c.amount.toString(),
        c.redemptionLimit.toString(),
        c.perUserLimit,
        c.startsAt,
        c.endsAt,
        c.status,
        c.createdBy,
        c.idempotencyKey,
        c.requestHash,
        c.createdAt,
      ],
    );
  }

  async setStatus(em: EntityManager, id: string, status: number): Promise<void> {
    await em.execute("update campaigns set status = ?, changed_at = clock_timestamp() where id = ?", [
      status,
      id,
    ]);
  }

  /** The single-use code with this hash: its id and campaign, and whether it was redeemed. */
  async codeByHash(
    em: EntityManager,
    hash: Buffer,
  ): Promise<{ id: string; campaignId: string; redeemed: boolean } | null> {
    const rows = await em.execute<Row[]>(
      "select id, campaign_id, redeemed_by is not null as redeemed from codes where hash = ?",
      [hash],
    );
    const row = rows[0];
    return row === undefined
      ? null
      : { id: row.id as string, campaignId: row.campaign_id as string, redeemed: row.redeemed as boolean };
  }

  async codeBatchExists(em: EntityManager, campaignId: string, key: string): Promise<boolean> {
    const rows = await em.execute(
      "select 1 from code_batches where campaign_id = ? and idempotency_key = ?",
      [campaignId, key],
    );
    return rows.length > 0;
  }

  /** Stores a batch of code hashes and raises the campaign's limit by as many. */
  async addCodes(em: EntityManager, campaignId: string, key: string, codes: { id: string; hash: Buffer }[]) {
    await em.execute(
      "insert into code_batches (campaign_id, idempotency_key, count, created_at) values (?, ?, ?, ?)",
      [campaignId, key, codes.length, new Date()],
    );
    await em.execute(
      `insert into codes (id, campaign_id, hash)
       select x.id, ?, decode(x.hash, 'hex') from jsonb_to_recordset(?::jsonb) as x(id uuid, hash text)`,
      [campaignId, JSON.stringify(codes.map((c) => ({ id: c.id, hash: c.hash.toString("hex") })))],
    );
    await em.execute(
      "update campaigns set redemption_limit = redemption_limit + ?, changed_at = clock_timestamp() where id = ?",
      [codes.length, campaignId],
    );
  }

  async codeCount(em: EntityManager, campaignId: string): Promise<bigint> {
    const rows = await em.execute<Row[]>("select count(*)::text as n from codes where campaign_id = ?", [
      campaignId,
    ]);
    return BigInt(rows[0]!.n as string);
  }

  /** Redemptions per minute, and what the wallet has credited. */
  async report(em: EntityManager, campaignId: string): Promise<CampaignReport> {
    const perMinute = await em.execute<Row[]>(
      `select date_trunc('minute', created_at) as minute, count(*)::text as n from redemptions
       where campaign_id = ? group by 1 order by 1`,
      [campaignId],
    );
    const credited = await em.execute<Row[]>(
      "select count(*)::text as n from redemptions where campaign_id = ? and credited_at is not null",
      [campaignId],
    );
    return {
      perMinute: perMinute.map((r) => ({
        at: new Date(r.minute as string),
        redemptions: BigInt(r.n as string),
      })),
      credited: BigInt(credited[0]!.n as string),
    };
  }

  /** Marks redemptions as credited by the wallet (from its TransferCommitted events). */
  async markCredited(em: EntityManager, credits: { redemptionId: string; at: Date }[]) {
    if (credits.length === 0) return;
    await em.execute(
      `update redemptions r set credited_at = x.at
       from jsonb_to_recordset(?::jsonb) as x(id uuid, at timestamptz)
       where r.id = x.id and r.credited_at is null`,
      [JSON.stringify(credits.map((c) => ({ id: c.redemptionId, at: c.at.toISOString() })))],
    );
  }

  /**
   * Claims the right to announce these campaigns' counters now: at most once per `intervalMs`
   * per campaign. Returns the campaigns claimed and, for the others with news, when next.
   */
  async claimAnnouncement(
    em: EntityManager,
    ids: readonly string[],
    intervalMs: number,
  ): Promise<{ claimed: CampaignRow[]; later: Map<string, Date> }> {
    const rows = await em.execute<Row[]>(
      `with due as (
         update campaigns set published_at = clock_timestamp()
         where id in (select jsonb_array_elements_text(?::jsonb)::uuid) and changed_at > published_at
           and published_at <= clock_timestamp() - make_interval(secs => ? / 1000.0)
         returning *)
       select c.*, due.id is not null as claimed,
              c.published_at + make_interval(secs => ? / 1000.0) as next_at
       from campaigns c left join due on due.id = c.id
       where c.id in (select jsonb_array_elements_text(?::jsonb)::uuid)
         and (due.id is not null or c.changed_at > c.published_at)`,
      [JSON.stringify(ids), intervalMs, intervalMs, JSON.stringify(ids)],
    );
    const claimed: CampaignRow[] = [];
    const later = new Map<string, Date>();
    for (const row of rows) {
      if (row.claimed) claimed.push(campaignRow(row));
      else later.set(row.id as string, new Date(row.next_at as string));
    }
    return { claimed, later };
  }
}
