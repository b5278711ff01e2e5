// Operations, for admins: dead letters (list, inspect, replay, discard), outbox rows JetStream
// refused (with a retry), the lag of every durable consumer over time, and the ledger audit.
// The same views as `./ov dlq`, `./ov outbox` and `./ov ledger audit`, over the gateway's REST
// routes; lag is sampled every 2 s while the page is open (the gateway keeps no history).
import { ok, type paths, type Schema } from "@ovation/client";
import { useState } from "preact/hooks";
import { TimeChart } from "../components/chart.tsx";
import { timeLabel } from "../format.ts";
import { describeError, usePoll } from "../live.ts";
import { useSession } from "../session.ts";

type DlqEntry = Schema<"ovation.dlq.v1.DlqEntry">;
type OutboxRow = NonNullable<
  paths["/api/admin/outbox"]["get"]["responses"]["200"]["content"]["application/json"]["rows"]
>[number];

const dlqRefreshMs = 3_000;
const outboxRefreshMs = 5_000;
const lagSampleMs = 2_000;
const lagPoints = 150;

export function OperationsPage() {
  return (
    <section>
      <h1>Operations</h1>
      <DeadLetters />
      <OutboxRows />
      <ConsumerLag />
      <LedgerAudit />
    </section>
  );
}

function DeadLetters() {
  const { client } = useSession();
  const entries = usePoll(
    () => ok(client.api.GET("/api/admin/dlq", { params: { query: { pageSize: 100 } } })),
    dlqRefreshMs,
    [client],
  );
  const [inspected, setInspected] = useState<DlqEntry | undefined>(undefined);
  const [outcome, setOutcome] = useState<string | undefined>(undefined);
  const act = async (what: string, call: () => Promise<unknown>) => {
    try {
      await call();
      setOutcome(what);
      setInspected(undefined);
    } catch (failure) {
      setOutcome(describeError(failure));
    }
    entries.reload();
  };
  const path = (entry: DlqEntry) => ({ params: { path: { id: entry.id ?? "" } } });
  const list = entries.value?.entries ?? [];
  return (
    <div class="panel" data-testid="dead-letters">
      <h2>Dead letters</h2>
      {entries.error === undefined ? null : <p class="error">{entries.error}</p>}
      {outcome === undefined ? null : (
        <p class="notice" data-testid="dlq-outcome">
          {outcome}
        </p>
      )}
      {entries.value !== undefined && list.length === 0 ? <p class="hint">No dead letters.</p> : null}
      <table>
        <tbody>
          {list.map((entry) => (
            <tr key={entry.id} data-testid={`dlq-${entry.id}`}>
              <td>#{entry.id}</td>
              <td>{entry.consumer}</td>
              <td>{entry.subject}</td>
              <td>{entry.reason}</td>
              <td>{timeLabel(entry.deadTime)}</td>
              <td>
                <button
                  type="button"
                  onClick={async () =>
                    setInspected((await ok(client.api.GET("/api/admin/dlq/{id}", path(entry)))).entry)
                  }
                >
                  Inspect
                </button>
                <button
                  type="button"
                  onClick={() =>
                    act(`Replayed #${entry.id}`, () =>
                      ok(client.api.POST("/api/admin/dlq/{id}/replay", { ...path(entry), body: {} })),
                    )
                  }
                >
                  Replay
                </button>
                <button
                  type="button"
                  onClick={() =>
                    act(`Discarded #${entry.id}`, () =>
                      ok(client.api.DELETE("/api/admin/dlq/{id}", path(entry))),
                    )
                  }
                >
                  Discard
                </button>
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      {inspected === undefined ? null : (
        <div class="inspect" data-testid="dlq-inspect">
          <h3>Dead letter #{inspected.id}</h3>
          <dl>
            <dt>Event</dt>
            <dd>
              {inspected.eventType} <code>{inspected.eventId}</code>
            </dd>
            <dt>From</dt>
            <dd>
              {inspected.stream} #{inspected.streamSequence}, {inspected.subject}
            </dd>
            <dt>Consumer</dt>
            <dd>
              {inspected.consumer}, {inspected.deliveries} deliveries
            </dd>
            <dt>Reason</dt>
            <dd>{inspected.reason}</dd>
            <dt>Payload (base64)</dt>
            <dd>
              <code class="payload">{inspected.payload || "(empty)"}</code>
            </dd>
          </dl>
        </div>
      )}
    </div>
  );
}

function OutboxRows() {
  const { client } = useSession();
  const rows = usePoll(() => ok(client.api.GET("/api/admin/outbox")), outboxRefreshMs, [client]);
  const [outcome, setOutcome] = useState<string | undefined>(undefined);
  const list = rows.value?.rows ?? [];
  const retry = async (service: OutboxRow["service"], id: string) => {
    try {
      await ok(
        client.api.POST("/api/admin/outbox/{service}/{id}/retry", { params: { path: { service, id } } }),
      );
      setOutcome(`Outbox row ${service} #${id} is due now`);
    } catch (failure) {
      setOutcome(describeError(failure));
    }
    rows.reload();
  };
  return (
    <div class="panel" data-testid="outbox">
      <h2>Outbox rows JetStream refused</h2>
      {rows.error === undefined ? null : <p class="error">{rows.error}</p>}
      {outcome === undefined ? null : <p class="notice">{outcome}</p>}
      {rows.value !== undefined && list.length === 0 ? <p class="hint">Every outbox row went out.</p> : null}
      <table>
        <tbody>
          {list.map((row) => (
            <tr key={`${row.service}-${row.id}`}>
              <td>{row.service}</td>
              <td>#{row.id}</td>
              <td>{row.subject}</td>
              <td>{row.attempts} attempts</td>
              <td class="error-text">{row.lastError}</td>
              <td>next {timeLabel(row.nextAttempt)}</td>
              <td>
                <button type="button" onClick={() => retry(row.service, row.id)}>
                  Retry now
                </button>
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

interface LagHistory {
  times: number[];
  /** Outstanding messages (pending + unacknowledged) per consumer, aligned with `times`. */
  byConsumer: Map<string, (number | null)[]>;
}

function ConsumerLag() {
  const { client } = useSession();
  const [history, setHistory] = useState<LagHistory>({ times: [], byConsumer: new Map() });
  const latest = usePoll(
    async () => {
      const answer = await ok(client.api.GET("/api/admin/consumers"));
      setHistory((previous) => appendLag(previous, answer));
      return answer;
    },
    lagSampleMs,
    [client],
  );
  const consumers = latest.value?.consumers ?? [];
  const lines = [...history.byConsumer.entries()].map(([label, values]) => ({ label, values }));
  return (
    <div class="panel" data-testid="consumer-lag">
      <h2>Consumer lag</h2>
      {latest.error === undefined ? null : <p class="error">{latest.error}</p>}
      <TimeChart
        title="Outstanding messages per durable consumer"
        unit="messages"
        times={history.times}
        lines={lines}
      />
      <table>
        <thead>
          <tr>
            <th>Consumer</th>
            <th>Stream</th>
            <th>Service</th>
            <th>Pending</th>
            <th>Unacknowledged</th>
            <th>Redelivered</th>
          </tr>
        </thead>
        <tbody>
          {consumers.map((consumer) => (
            <tr key={consumer.consumer}>
              <td>{consumer.consumer}</td>
              <td>{consumer.stream}</td>
              <td>{consumer.service}</td>
              <td>{consumer.pending}</td>
              <td>{consumer.ackPending}</td>
              <td>{consumer.redelivered}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

/** One more sample; consumers that appear later get gaps (null) before their first one. */
function appendLag(
  previous: LagHistory,
  answer: { time: string; consumers: { consumer: string; pending: number; ackPending: number }[] },
): LagHistory {
  const keep = (values: (number | null)[]) => values.slice(-lagPoints);
  const times = keep([...previous.times, new Date(answer.time).getTime() / 1000]) as number[];
  const byConsumer = new Map<string, (number | null)[]>();
  for (const consumer of answer.consumers) {
    const before = previous.byConsumer.get(consumer.consumer) ?? previous.times.map(() => null);
    byConsumer.set(consumer.consumer, keep([...before, consumer.pending + consumer.ackPending]));
  }
  return { times, byConsumer };
}

function LedgerAudit() {
  const { client } = useSession();
  const [report, setReport] = useState<Schema<"ovation.wallet.v1.AuditLedgerResponse"> | undefined>(
    undefined,
  );
  const [running, setRunning] = useState(false);
  const [error, setError] = useState<string | undefined>(undefined);
  const run = async () => {
    setRunning(true);
    setError(undefined);
    try {
      setReport(await ok(client.api.GET("/api/admin/wallet/audit")));
    } catch (failure) {
      setError(describeError(failure));
    } finally {
      setRunning(false);
    }
  };
  return (
    <div class="panel" data-testid="ledger-audit">
      <h2>Ledger audit</h2>
      <button type="button" onClick={run} disabled={running}>
        {running ? "Auditing…" : "Run the ledger audit"}
      </button>
      {error === undefined ? null : <p class="error">{error}</p>}
      {report === undefined ? null : (
        <>
          <p class={report.ok ? "passed" : "failed"} data-testid="audit-result">
            {report.ok ? "Ledger audit passed" : "Ledger audit FAILED"}
          </p>
          <ul class="checks">
            {(report.checks ?? []).map((check, index) => (
              <li key={index} class={check.passed ? "passed" : "failed"}>
                {check.passed ? "ok" : "FAIL"} {check.text}
              </li>
            ))}
          </ul>
        </>
      )}
    </div>
  );
}
