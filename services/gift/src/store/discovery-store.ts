// Boosts and discovery: the idempotency record of PurchaseBoost, the discovery projection
// (written by the gift-discovery consumer and the boost-expiry timer, raw SQL on unqualified
// names so a replay can rebuild it: packages/events/src/replay.ts) and the ranking query.
import type { Database, EntityManager } from "@ovation/db";
import { scheduleJobs } from "@ovation/jobs";
import type { BoostClaim, BoostRepository, BoostRequest, DiscoverRow } from "../app/ports.ts";
import { activityWindowMs, BoostTargetType } from "../domain/boosts.ts";

export const discoveryTables = ["discovery_boosts", "discovery_scores"] as const;

export const boostJobs = { expire: "gift-boost-expire" } as const;

/** A boost as the projection receives it. */
export interface ProjectedBoost {
  boostId: string;
  targetType: number;
  targetId: string;
  amount: bigint;
  expiresAt: Date;
}

export class DiscoveryStore implements BoostRepository {
  readonly #orm: Database;

  constructor(orm: Database) {
    this.#orm = orm;
  }

  fork(): EntityManager {
    return this.#orm.em.fork();
  }

  /**
   * Records a purchase under its key, or finds the earlier one: the same request gets its first
   * event back (so a retry pays once), another request under the same key is a conflict.
   */
  async claimBoost(request: BoostRequest): Promise<BoostClaim> {
    const em = this.fork();
    const inserted = await em.execute<{ id: string }[]>(
      `insert into boost_purchases (id, buyer_id, idempotency_key, target_type, target_id, amount,
         duration_hours, event)
       values (?, ?, ?, ?, ?, ?, ?, ?) on conflict (buyer_id, idempotency_key) do nothing returning id`,
      [
        request.id,
        request.buyerId,
        request.idempotencyKey,
        request.targetType,
        request.targetId,
        request.amount.toString(),
        request.durationHours,
        Buffer.from(request.event),
      ],
    );
    if (inserted.length === 1) return { outcome: "claimed", id: request.id, event: request.event };
    return (await this.earlierBoost(request)) ?? { outcome: "conflict" };
  }

  /**
   * The purchase made earlier under this buyer's key: "existing" with its event when it asked
   * for the same boost, "conflict" when it asked for another; undefined when there is none.
   */
  async earlierBoost(
    request: Pick<
      BoostRequest,
      "buyerId" | "idempotencyKey" | "targetType" | "targetId" | "amount" | "durationHours"
    >,
  ): Promise<BoostClaim | undefined> {
    const [earlier] = await this.fork().execute<
      {
        id: string;
        target_type: number;
        target_id: string;
        amount: string;
        duration_hours: number;
        event: Buffer;
      }[]
    >(
      `select id, target_type, target_id, amount::text, duration_hours, event from boost_purchases
       where buyer_id = ? and idempotency_key = ?`,
      [request.buyerId, request.idempotencyKey],
    );
    if (earlier === undefined) return undefined;
    const same =
      earlier.target_type === request.targetType &&
      earlier.target_id === request.targetId &&
      BigInt(earlier.amount) === request.amount &&
      earlier.duration_hours === request.durationHours;
    return same
      ? { outcome: "existing", id: earlier.id, event: new Uint8Array(earlier.event) }
      : { outcome: "conflict" };
  }

  /** True when the user has gone live at least once: a host whose profile can be boosted. */
  async isHost(userId: string): Promise<boolean> {
    const rows = await this.fork().execute("select 1 from rooms where host_id = ? limit 1", [userId]);
    return rows.length > 0;
  }

  /**
   * The projection's handler: each boost once (the inbox already filtered redeliveries; the
   * primary key is the second line), its coins added to its target until it expires, and its
   * expiry timer scheduled. A boost that is over when it arrives (a replay of old events, a
   * consumer that was down for days) is recorded as expired and adds nothing.
   */
  async applyBoosts(em: EntityManager, boosts: readonly ProjectedBoost[]): Promise<void> {
    const active = await em.execute<{ boost_id: string; expires_at: Date }[]>(
      `with incoming as (
         select * from jsonb_to_recordset(?::jsonb)
           as b(boost_id uuid, target_type smallint, target_id text, amount bigint, expires_at timestamptz)),
       added as (
         insert into discovery_boosts (boost_id, target_type, target_id, amount, expires_at, expired)
         select boost_id, target_type, target_id, amount, expires_at, expires_at <= now() from incoming
         on conflict (boost_id) do nothing
         returning *),
       scored as (
         insert into discovery_scores (target_type, target_id, boost)
         select target_type, target_id, sum(amount) from added where not expired group by target_type, target_id
         order by target_type, target_id
         on conflict (target_type, target_id) do update set boost = discovery_scores.boost + excluded.boost)
       select boost_id, expires_at from added where not expired`,
      [
        JSON.stringify(
          boosts.map((b) => ({
            boost_id: b.boostId,
            target_type: b.targetType,
            target_id: b.targetId,
            amount: b.amount.toString(),
            expires_at: b.expiresAt.toISOString(),
          })),
        ),
      ],
    );
    await scheduleJobs(
      em,
      active.map((boost) => ({
        task: boostJobs.expire,
        key: `gift:boost:${boost.boost_id}`,
        runAt: new Date(boost.expires_at),
        payload: { boostId: boost.boost_id },
      })),
    );
  }

  /**
   * Expires every boost whose time is up and takes its coins off its target; returns how many.
   * Run by each boost's timer (a sweep, so a late or repeated timer is harmless) and by a
   * replay's swap for the timers that fired on the old tables meanwhile.
   */
  async expireDueBoosts(em: EntityManager): Promise<number> {
    const [row] = await em.execute<{ n: number }[]>(
      `with due as (
         update discovery_boosts set expired = true
         where boost_id in (select boost_id from discovery_boosts where not expired and expires_at <= now()
                            order by boost_id for update)
         returning target_type, target_id, amount),
       totals as (
         select target_type, target_id, sum(amount) as amount from due group by target_type, target_id),
       -- Two statements on disjoint rows: one statement may not change a row twice.
       lowered as (
         update discovery_scores s set boost = s.boost - t.amount from totals t
         where s.target_type = t.target_type and s.target_id = t.target_id and s.boost > t.amount),
       emptied as (
         delete from discovery_scores s using totals t
         where s.target_type = t.target_type and s.target_id = t.target_id and s.boost <= t.amount)
       select count(*)::int as n from due`,
    );
    return row!.n;
  }

  /**
   * Live rooms by score = coins gifted in the room in the last hour + coins of the active
   * boosts on the room and on its host; ties: newest room first, then id.
   */
  async discover(limit: number): Promise<DiscoverRow[]> {
    return this.fork().execute<DiscoverRow[]>(
      `select r.id, r.host_id, r.title, r.status, r.started_at, r.ended_at,
              coalesce(a.activity, 0)::text as activity,
              (coalesce(rs.boost, 0) + coalesce(hs.boost, 0))::text as boost,
              (select min(b.expires_at) from discovery_boosts b
               where not b.expired and ((b.target_type = ? and b.target_id = r.id::text)
                                     or (b.target_type = ? and b.target_id = r.host_id))) as boost_expires_at
       from rooms r
       left join lateral (select sum(g.total) as activity from gift_log g
                          where g.room_id = r.id and g.sent_at > now() - make_interval(secs => ?)) a on true
       left join discovery_scores rs on rs.target_type = ? and rs.target_id = r.id::text
       left join discovery_scores hs on hs.target_type = ? and hs.target_id = r.host_id
       where r.status = 1
       order by coalesce(a.activity, 0) + coalesce(rs.boost, 0) + coalesce(hs.boost, 0) desc,
                r.started_at desc, r.id
       limit ?`,
      [
        BoostTargetType.ROOM,
        BoostTargetType.HOST,
        activityWindowMs / 1000,
        BoostTargetType.ROOM,
        BoostTargetType.HOST,
        limit,
      ],
    );
  }
}
