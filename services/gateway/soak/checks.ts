// What must hold after the cluster soak, checked against what clients were told: the wallet's
// journal, the discount and order tables, the ledger audit `./ov ledger audit` runs (its own
// code, as a child process), the DLQ through the admin API, and the outboxes. First `settle`
// waits (bounded) until the asynchronous work has caught up: host credits, promotion credits,
// the last saga steps, the releases of reserved stock.
import { execFile } from "node:child_process";
import path from "node:path";
import { promisify } from "node:util";
import type { TestEnvironment } from "@ovation/testkit";
import type pg from "pg";
import type { OrderRecord, RedeemRecord, SendRecord } from "./load.ts";
import { restCall } from "./rest.ts";
import { buyerCoins, type Scene } from "./scene.ts";

export interface Check {
  name: string;
  passed: boolean;
  /** What was found; for a failure, what differs. */
  detail: string;
}

export interface Outcomes {
  sends: SendRecord[];
  redeems: RedeemRecord[];
  orders: OrderRecord[];
}

const run = promisify(execFile);
const walletCli = path.resolve(import.meta.dirname, "../../wallet/src/cli.ts");
/** ovation.wallet.v1.TransferKind and ovation.order.v1.OrderStatus values, as stored. */
const kind = { earn: 4, gift: 5, revenue: 6, promotion: 7 } as const;
const orderStatus = { completed: 3, failed: 4 } as const;
const holdPending = 1;
const giftsInTransit = "system:gifts-in-transit";

const rows = async <Row extends pg.QueryResultRow>(db: pg.Client, sql: string, values: unknown[] = []) =>
  (await db.query<Row>(sql, values)).rows;
const one = async (db: pg.Client, sql: string, values: unknown[] = []) =>
  String(Object.values((await rows(db, sql, values))[0]!)[0]);

/** Waits until every asynchronous consequence of the loads has happened; returns how long it took. */
export async function settle(db: pg.Client, timeoutMs: number): Promise<number> {
  const begun = performance.now();
  const outboxes = (
    await rows<{ schema: string }>(
      db,
      "select table_schema as schema from information_schema.tables where table_name = 'outbox'",
    )
  ).map((row) => row.schema);
  const outstanding = () =>
    one(
      db,
      `select (select count(*) from wallet.transfers where kind = ${kind.gift})
            - (select count(*) from wallet.gift_settlements)
            + (select count(*) from discount.redemptions where credited_at is null)
            + (select count(*) from "order".orders where status not in (${orderStatus.completed}, ${orderStatus.failed}))
            + (select count(*) from wallet.holds where status = ${holdPending})
            + (select coalesce(sum(reserved), 0) from "order".inventory_stock)
            ${outboxes.map((schema) => `+ (select count(*) from "${schema}".outbox)`).join(" ")}`,
    );
  for (;;) {
    const left = await outstanding();
    if (left === "0") return performance.now() - begun;
    if (performance.now() - begun > timeoutMs)
      throw new Error(`${left} things still outstanding ${timeoutMs} ms after the load ended`);
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

export async function runChecks(
  db: pg.Client,
  env: TestEnvironment,
  gateway: string,
  scene: Scene,
  outcomes: Outcomes,
): Promise<{ checks: Check[]; audit: string[] }> {
  const checks = [
    ...(await sendChecks(db, scene, outcomes.sends)),
    ...(await flashChecks(db, scene, outcomes.redeems)),
    ...(await orderChecks(db, scene, outcomes.orders)),
  ];
  const audit = await ledgerAudit(env);
  checks.push({ name: "ledger audit clean", passed: audit.passed, detail: audit.lines.at(-1) ?? "" });
  const dlq = await restCall(gateway, "GET", "/api/admin/dlq?pageSize=100", { token: scene.adminToken });
  const deadLetters = dlq.body?.entries ?? [];
  checks.push({
    name: "no dead letters",
    passed: dlq.status === 200 && deadLetters.length === 0,
    detail: `GET /api/admin/dlq answered ${dlq.status} with ${deadLetters.length} entries${deadLetters.length === 0 ? "" : `: ${JSON.stringify(deadLetters.slice(0, 3))}`}`,
  });
  return { checks, audit: audit.lines };
}

async function sendChecks(db: pg.Client, scene: Scene, sends: SendRecord[]): Promise<Check[]> {
  const accepted = sends.filter((send) => send.answer.status === 200);
  const hostOf = new Map(scene.roomIds.map((room, i) => [room, scene.hostIds[i]!]));
  const debits = new Map(
    (
      await rows<{ reference: string; n: number; amount: string; owner: string }>(
        db,
        `select reference, count(*)::int as n, sum(amount)::text as amount, min(debit_owner) as owner
         from wallet.transfers where kind = $1 group by reference`,
        [kind.gift],
      )
    ).map((row) => [row.reference, row]),
  );
  const settlements = new Map(
    (
      await rows<{ reference: string; n: number; amount: string; host: string }>(
        db,
        `select t.reference, count(*)::int as n, sum(s.amount)::text as amount, min(s.host_id) as host
         from wallet.gift_settlements s join wallet.transfers t on t.id = s.gift_transfer_id group by t.reference`,
      )
    ).map((row) => [row.reference, row]),
  );
  const wrongDebits: string[] = [];
  const wrongCredits: string[] = [];
  for (const send of accepted) {
    const gift = send.answer.body.gift;
    const debit = debits.get(gift.id);
    if (debit?.n !== 1 || debit.amount !== gift.total || debit.owner !== `user:${send.sender}`)
      wrongDebits.push(`${send.idempotencyKey}: ${JSON.stringify(debit ?? "no debit")}`);
    const credit = settlements.get(gift.id);
    if (credit?.n !== 1 || credit.amount !== gift.total || credit.host !== hostOf.get(gift.roomId))
      wrongCredits.push(`${send.idempotencyKey}: ${JSON.stringify(credit ?? "never credited")}`);
  }
  const sendIds = new Set(accepted.map((send) => send.answer.body.gift.id));
  const unanswered = [...debits.keys()].filter((reference) => !sendIds.has(reference));
  // What each host was credited (EARN out of transit) is their share of the gifts settled for them.
  const hostShares = await rows<{ host: string; shares: string; earned: string }>(
    db,
    `select s.host_id as host, s.shares::text, coalesce(e.earned, 0)::text as earned
     from (select host_id, sum(host_amount) as shares from wallet.gift_settlements group by host_id) s
     left join (select credit_owner, sum(amount) as earned from wallet.transfers
                where kind = $1 and debit_owner = $2 group by credit_owner) e on e.credit_owner = 'user:' || s.host_id`,
    [kind.earn, giftsInTransit],
  );
  const unequalShares = hostShares.filter((row) => row.shares !== row.earned);
  const finalRefusals = countBy(sends.filter((send) => send.answer.status !== 200).map(statusOf));
  return [
    {
      name: "every gift send answered 200 (retried with its key while 503, 504 or cut off)",
      passed: accepted.length === sends.length && accepted.length > 0,
      detail: `${accepted.length} of ${sends.length} accepted${describeCounts(finalRefusals)}`,
    },
    {
      name: "every accepted send debited once, and nothing else debited as a gift",
      passed: wrongDebits.length === 0 && unanswered.length === 0 && sendIds.size === accepted.length,
      detail: `${debits.size} GIFT transfers in the journal for ${sendIds.size} accepted sends${sample(", wrong: ", wrongDebits)}${sample(", never answered: ", unanswered)}`,
    },
    {
      name: "every accepted send credited once, to its host",
      passed: wrongCredits.length === 0 && settlements.size === sendIds.size && unequalShares.length === 0,
      detail: `${settlements.size} gift debits settled; ${hostShares.length} hosts credited their shares${sample(", wrong: ", wrongCredits)}${sample(
        ", hosts whose earnings differ: ",
        unequalShares.map((row) => JSON.stringify(row)),
      )}`,
    },
  ];
}

async function flashChecks(db: pg.Client, scene: Scene, redeems: RedeemRecord[]): Promise<Check[]> {
  const slots = Number(
    await one(db, "select redemption_limit from discount.campaigns where id = $1", [scene.campaignId]),
  );
  const told = redeems.filter((redeem) => redeem.answer.status === 200).map((redeem) => redeem.user);
  const exhausted = redeems.filter(
    (redeem) => redeem.answer.status === 429 && redeem.answer.body?.message === "campaign exhausted",
  );
  const other = redeems.filter((redeem) => redeem.answer.status !== 200 && !exhausted.includes(redeem));
  const redemptions = await rows<{ user: string; place: string }>(
    db,
    // Ordered by the number, not by its text.
    "select user_id as user, position::text as place from discount.redemptions where campaign_id = $1 order by position",
    [scene.campaignId],
  );
  const winners = new Set(redemptions.map((row) => `user:${row.user}`));
  const positionsInOrder = redemptions.every((row, i) => row.place === String(i + 1));
  const credits = await rows<{ owner: string; n: number; amount: string }>(
    db,
    `select credit_owner as owner, count(*)::int as n, sum(amount)::text as amount
     from wallet.transfers where kind = $1 group by credit_owner`,
    [kind.promotion],
  );
  const wrongCredits = credits.filter(
    (row) => row.n !== 1 || row.amount !== String(scene.campaignCoins) || !winners.has(row.owner),
  );
  const toldYes = new Set(told.map((user) => `user:${user}`));
  return [
    {
      name: `exactly ${slots} winners, each told so, every other member of the crowd told it is exhausted`,
      passed:
        told.length === slots &&
        redemptions.length === slots &&
        winners.size === slots &&
        positionsInOrder &&
        sameSet(toldYes, winners) &&
        other.length === 0,
      detail: `${told.length} answered 200, ${exhausted.length} 429 exhausted, ${redemptions.length} redemptions of ${winners.size} users, positions 1..${slots} ${positionsInOrder ? "in order" : "NOT in order"}${describeCounts(countBy(other.map((redeem) => statusOf(redeem))))}`,
    },
    {
      name: "each winner credited once",
      passed: credits.length === slots && wrongCredits.length === 0,
      detail: `${credits.length} PROMOTION credits to ${credits.length} users${sample(
        ", wrong: ",
        wrongCredits.map((row) => JSON.stringify(row)),
      )}`,
    },
  ];
}

async function orderChecks(db: pg.Client, scene: Scene, orders: OrderRecord[]): Promise<Check[]> {
  const placed = new Set(
    orders.filter((order) => order.answer.status === 200).map((order) => order.answer.body.order.id),
  );
  const stored = await rows<{ id: string; status: number; reason: string; method: number; total: string }>(
    db,
    `select id, status, failure_reason as reason, payment_method as method, total::text from "order".orders`,
  );
  const unfinished = stored.filter(
    (order) => order.status !== orderStatus.completed && order.status !== orderStatus.failed,
  );
  const timedOut = stored.filter((order) => /^no .* answer within /.test(order.reason));
  const completed = stored.filter((order) => order.status === orderStatus.completed);
  const stock = await rows<{ product: string; available: string; reserved: string; sold: string }>(
    db,
    `select product_id as product, available::text, reserved::text, sold::text from "order".inventory_stock`,
  );
  const sold = new Map(
    (
      await rows<{ product: string; quantity: string }>(
        db,
        `select l->>'product_id' as product, sum((l->>'quantity')::int)::text as quantity
         from "order".orders o, jsonb_array_elements(o.lines) l where o.status = $1 group by 1`,
        [orderStatus.completed],
      )
    ).map((row) => [row.product, row.quantity]),
  );
  const stocked = await one(
    db,
    `select string_agg(distinct (a.total)::text, ',') from (select product_id, sum(delta) as total
     from "order".inventory_adjustments group by product_id) a`,
  );
  const unbalanced = stock.filter(
    (row) =>
      String(BigInt(row.available) + BigInt(row.reserved) + BigInt(row.sold)) !== stocked ||
      row.reserved !== "0" ||
      row.sold !== (sold.get(row.product) ?? "0"),
  );
  const paid = completed
    .filter((order) => order.method === 1)
    .reduce((sum, order) => sum + BigInt(order.total), 0n);
  const buyersHold = BigInt(
    await one(
      db,
      "select coalesce(sum(balance), 0)::text from wallet.accounts where owner like 'user:b%' and asset = 'COIN'",
    ),
  );
  const buyersExpected = BigInt(scene.buyerIds.length) * buyerCoins - paid;
  const pendingHolds = await one(db, `select count(*) from wallet.holds where status = ${holdPending}`);
  const refused = orders.filter((order) => order.answer.status !== 200);
  return [
    {
      name: "every order placed and final (COMPLETED or FAILED), none failed for want of an answer",
      passed:
        refused.length === 0 &&
        stored.length === placed.size &&
        stored.every((order) => placed.has(order.id)) &&
        unfinished.length === 0 &&
        timedOut.length === 0,
      detail: `${placed.size} placed of ${orders.length}, ${completed.length} completed, ${stored.length - completed.length - unfinished.length} failed, ${unfinished.length} unfinished, ${timedOut.length} timed out${describeCounts(countBy(refused.map((order) => statusOf(order))))}`,
    },
    {
      name: "stock conserved: available + reserved + sold = stocked, nothing left reserved, sold = completed lines",
      passed: stock.length === scene.productIds.length && unbalanced.length === 0,
      detail: `${stock.length} products of ${stocked} units${sample(
        ", wrong: ",
        unbalanced.map((row) => JSON.stringify(row)),
      )}`,
    },
    {
      name: "buyers paid exactly their completed wallet orders, no hold left pending",
      passed: buyersHold === buyersExpected && pendingHolds === "0",
      detail: `buyers hold ${buyersHold} COIN, expected ${buyersExpected} (${paid} paid); ${pendingHolds} pending holds`,
    },
  ];
}

/** `./ov ledger audit`'s own code (services/wallet/src/cli.ts) on the soak's database. */
async function ledgerAudit(env: TestEnvironment): Promise<{ passed: boolean; lines: string[] }> {
  try {
    const { stdout } = await run(process.execPath, [walletCli, "audit"], {
      env: { ...process.env, ...env.env },
    });
    return { passed: true, lines: stdout.trim().split("\n") };
  } catch (error) {
    const failed = error as { stdout?: string; stderr?: string };
    return { passed: false, lines: `${failed.stdout ?? ""}${failed.stderr ?? ""}`.trim().split("\n") };
  }
}

const statusOf = (record: { answer: { status: number; body: unknown } }) =>
  record.answer.status === 0
    ? "no answer"
    : `${record.answer.status} ${(record.answer.body as { message?: string } | undefined)?.message ?? ""}`.trim();

function countBy(values: string[]): Map<string, number> {
  const counts = new Map<string, number>();
  for (const value of values) counts.set(value, (counts.get(value) ?? 0) + 1);
  return counts;
}

const describeCounts = (counts: Map<string, number>) =>
  counts.size === 0 ? "" : `; ${[...counts].map(([what, n]) => `${n}× ${what}`).join(", ")}`;

const sample = (label: string, items: string[]) =>
  items.length === 0 ? "" : `${label}${items.length} (${items.slice(0, 3).join("; ")})`;

const sameSet = (a: Set<string>, b: Set<string>) => a.size === b.size && [...a].every((item) => b.has(item));
