// Client sessions through the sidecars, as the operator's end-to-end tests keep them: numbered
// messages to the echo backends (which answer late), checked for loss, repeats and order in windows.
import assert from 'node:assert/strict';
import { waitFor, type TestClient } from '../helpers.js';

/** The Deployment a pod belongs to: "echo-green-5d8f7c9b4-x2x7q" → "echo-green". */
export const deploymentOf = (pod: string): string => pod.split('-').slice(0, -2).join('-') || pod;

/**
 * A client session sending numbered messages; the echo backends answer "<pod>|<message>", late.
 * settle() checks it in windows: the messages sent since the previous settle() and the answers
 * received since then, so a test reports its own losses rather than an earlier test's.
 */
export class TrackedSession {
  sent = 0;
  private timer: NodeJS.Timeout | undefined;
  /** Where the previous settle() left off: messages sent and answers received by then. */
  private windowSent = 0;
  private windowAnswers = 0;

  constructor(
    readonly id: string,
    readonly client: TestClient,
    /** The sidecar it connected through. */
    readonly via: string,
  ) {}

  /** Sends a message every `everyMs` (restarting the timer if it runs). */
  send(everyMs: number): void {
    clearInterval(this.timer);
    this.timer = setInterval(() => this.sendOne(), everyMs);
  }

  pause(): void {
    clearInterval(this.timer);
  }

  sendOne(): void {
    this.client.ws.send(`${this.id}:${this.sent++}`);
  }

  /** Every answer so far, in arrival order: the pod that answered and the message number (NaN: not this session's). */
  answers(): { pod: string; n: number }[] {
    return this.client.texts().map((t) => {
      const body = t.slice(t.indexOf('|') + 1);
      return { pod: t.slice(0, t.indexOf('|')), n: body.startsWith(`${this.id}:`) ? Number(body.slice(this.id.length + 1)) : NaN };
    });
  }

  /** Messages of this window not answered yet (by count). */
  unanswered(): number {
    return this.sent - this.windowSent - (this.client.received.length - this.windowAnswers);
  }

  /** Every message of this window answered exactly once, in order; returns the pod that answered last. */
  check(): string {
    const texts = this.client.texts().slice(this.windowAnswers);
    const expected = this.sent - this.windowSent;
    assert.equal(texts.length, expected, `${this.id}: ${expected} sent, ${texts.length} answered`);
    texts.forEach((t, i) => assert.equal(t.slice(t.indexOf('|') + 1), `${this.id}:${this.windowSent + i}`, `${this.id}: answer ${this.windowSent + i} is "${t}"`));
    const last = this.client.texts().at(-1) ?? '';
    return last.slice(0, last.indexOf('|'));
  }

  /** What went wrong in this window: messages never answered (and between which backends), other bad answers. */
  audit(): { lost: number[]; lostAt: string[]; unexpected: number; detail: string; firstUnexpected: string } {
    const all = this.answers();
    const answers = all.slice(this.windowAnswers);
    const seen = new Set<number>();
    const texts = this.client.texts().slice(this.windowAnswers);
    let unexpected = 0;
    let firstUnexpected = '';
    let highest = this.windowSent - 1;
    answers.forEach((a, i) => {
      // Repeated, out of order, never sent or not this session's.
      if (!(a.n > highest) || a.n >= this.sent) {
        unexpected++;
        firstUnexpected ||= `${this.id}: "${texts[i]}" after ${texts.slice(Math.max(0, i - 3), i).map((t) => `"${t}"`).join(' ')}`;
      } else highest = a.n;
      seen.add(a.n);
    });
    const lost: number[] = [];
    for (let n = this.windowSent; n < this.sent; n++) if (!seen.has(n)) lost.push(n);
    const lostAt = lost.map((n) => {
      const before = all.filter((a) => a.n < n).at(-1)?.pod;
      const after = all.find((a) => a.n > n)?.pod;
      if (!before || !after) return `${before ? deploymentOf(before) : '(start)'} → ${after ? deploymentOf(after) : '(nothing after)'}`;
      return before === after ? `within ${before}` : `${deploymentOf(before)} → ${deploymentOf(after)}`;
    });
    const detail = lost.length
      ? `${this.id} lost ${lost.slice(0, 5).join(', ')}${lost.length > 5 ? ', …' : ''} (${lostAt[0]}) of ${this.windowSent}..${this.sent - 1}`
      : '';
    return { lost, lostAt, unexpected, detail, firstUnexpected };
  }

  /** Starts the next window. */
  checkpoint(): void {
    this.windowSent = this.sent;
    this.windowAnswers = this.client.received.length;
  }
}

/** What the sessions lost or got wrong since the previous settle(), in one line ('' when nothing). */
export function lossReport(sessions: readonly TrackedSession[]): string {
  const audits = sessions.map((t) => t.audit());
  const lost = audits.reduce((n, a) => n + a.lost.length, 0);
  const unexpected = audits.reduce((n, a) => n + a.unexpected, 0);
  const closed = sessions.filter((t) => t.client.closed !== null);
  if (lost === 0 && unexpected === 0 && closed.length === 0) return '';
  const count = (keys: string[]) => {
    const m = new Map<string, number>();
    for (const k of keys) m.set(k, (m.get(k) ?? 0) + 1);
    return [...m].map(([k, n]) => `${n} ${k}`).join(', ');
  };
  return (
    `${lost} answers lost in ${audits.filter((a) => a.lost.length > 0).length} of ${sessions.length} sessions` +
    (lost ? ` (where: ${count(audits.flatMap((a) => a.lostAt))}; via: ${count(sessions.flatMap((t, i) => audits[i]!.lost.map(() => t.via)))})` : '') +
    `; ${unexpected} answers repeated, out of order or not the session's; ${closed.length} clients disconnected` +
    (closed.length ? ` (first: ${JSON.stringify(closed[0]!.client.closed)})` : '') +
    (lost ? `; e.g. ${audits.find((a) => a.detail)!.detail}` : '') +
    (unexpected ? `; first bad answer: ${audits.find((a) => a.firstUnexpected)!.firstUnexpected}` : '')
  );
}

/**
 * Stops the traffic, waits for every answer (they come late) and checks the messages sent since the
 * previous settle(): each answered exactly once, in order. Returns the pods that answered last.
 */
export async function settle(sessions: readonly TrackedSession[]): Promise<Set<string>> {
  const answered = async (what: string): Promise<void> => {
    // Answers are at most 200 ms late; 15 s covers a switch still draining on top of that.
    try {
      await waitFor(() => sessions.every((t) => t.unanswered() <= 0 || t.client.closed !== null), what, 15_000, 20);
    } catch (err) {
      assert.fail(`${(err as Error).message}: ${lossReport(sessions)}`);
    }
  };
  for (const t of sessions) t.pause();
  try {
    await answered('every message answered');
    // One more message each, sent once every earlier answer is in (no switch is under way): its
    // answer shows where the session is now, not before its last move.
    for (const t of sessions) t.sendOne();
    await answered('the last message answered');
    assert.equal(lossReport(sessions), '', 'no answer lost, repeated or out of order, no client disconnected');
    return new Set(sessions.map((t) => t.check()));
  } finally {
    for (const t of sessions) t.checkpoint();
  }
}
