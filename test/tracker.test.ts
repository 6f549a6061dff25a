// The request tracker on its own: what is replayed, what is a duplicate, what is forgotten.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { newCodecStats, RequestTracker } from '../sidecar/codecs/tracker.js';

const limits = { maxRequests: 100, maxBytes: 1 << 20, timeoutMs: 1000 };
const msg = (s: string) => Buffer.from(s);

function replayed(t: RequestTracker): string[] {
  const out: string[] = [];
  t.replay((d) => out.push(d.toString()));
  return out;
}

test('unanswered requests are replayed in the order they were sent; answered ones are not', () => {
  const stats = newCodecStats();
  const t = new RequestTracker(limits, stats);
  for (const id of ['1', '2', '3', '4']) t.requestSent([id], msg(`req${id}`), false, 0);
  assert.equal(t.answer(['2']), true);
  assert.equal(t.answer(['4']), true);
  assert.deepEqual(replayed(t), ['req1', 'req3']);
  assert.deepEqual(replayed(t), ['req1', 'req3'], 'still unanswered: replayed again after another failover');
  assert.equal(stats.tracked, 4);
  assert.equal(stats.replayed, 4);
});

test('a second answer to an id is a duplicate; an answer to an untracked id is delivered once', () => {
  const stats = newCodecStats();
  const t = new RequestTracker(limits, stats);
  t.requestSent(['a'], msg('A'), false, 0);
  assert.equal(t.answer(['a']), true);
  assert.equal(t.answer(['a']), false);
  assert.equal(t.answer(['never-asked']), true);
  assert.equal(t.answer(['never-asked']), false);
  assert.equal(stats.duplicateAnswers, 2);
});

test('a reused id starts a new exchange: its next answer is delivered', () => {
  const t = new RequestTracker(limits, newCodecStats());
  t.requestSent(['x'], msg('first'), false, 0);
  assert.equal(t.answer(['x']), true);
  t.requestSent(['x'], msg('second'), false, 10);
  assert.deepEqual(replayed(t), ['second']);
  assert.equal(t.answer(['x']), true);
  assert.equal(t.size, 0);
});

test('a batch stays pending until every id in it is answered, and is replayed whole', () => {
  const t = new RequestTracker(limits, newCodecStats());
  t.requestSent(['n:1', 'n:2', 'n:3'], msg('[batch]'), false, 0);
  assert.equal(t.answer(['n:1', 'n:3']), true);
  assert.deepEqual(replayed(t), ['[batch]']);
  assert.equal(t.answer(['n:2']), true);
  assert.deepEqual(replayed(t), []);
  assert.equal(t.trackedBytes, 0);
});

test('limits: beyond the count or byte bound the oldest request is no longer tracked (counted)', () => {
  const stats = newCodecStats();
  const t = new RequestTracker({ maxRequests: 3, maxBytes: 1 << 20, timeoutMs: 1000 }, stats);
  for (let i = 0; i < 5; i++) t.requestSent([`${i}`], msg(`r${i}`), false, i);
  assert.deepEqual(replayed(t), ['r2', 'r3', 'r4']);
  assert.equal(stats.evicted, 2);
  const bytes = newCodecStats();
  const small = new RequestTracker({ maxRequests: 100, maxBytes: 10, timeoutMs: 1000 }, bytes);
  small.requestSent(['a'], msg('123456'), false, 0);
  small.requestSent(['b'], msg('789012'), false, 0);
  assert.deepEqual(replayed(small), ['789012']);
  assert.equal(small.trackedBytes, 6);
  assert.equal(bytes.evicted, 1);
});

test('requests unanswered past the timeout are forgotten and counted; younger ones stay', () => {
  const stats = newCodecStats();
  const t = new RequestTracker(limits, stats);
  t.requestSent(['old'], msg('old'), false, 0);
  t.requestSent(['new'], msg('new'), false, 600);
  t.expire(999);
  assert.deepEqual(replayed(t), ['old', 'new']);
  t.expire(1000);
  assert.deepEqual(replayed(t), ['new']);
  assert.equal(stats.timeouts, 1);
  // A late answer to the forgotten request is still delivered (once).
  assert.equal(t.answer(['old']), true);
});

test('the tracked copy does not share memory with the socket buffer it came from', () => {
  const t = new RequestTracker(limits, newCodecStats());
  const chunk = Buffer.from('xxreq1yy');
  t.requestSent(['1'], chunk.subarray(2, 6), false, 0);
  chunk.fill(0);
  assert.deepEqual(replayed(t), ['req1']);
});

test('answers to backend calls: current backend, a backend that has died (orphan), or unknown', () => {
  const stats = newCodecStats();
  const t = new RequestTracker(limits, stats);
  t.backendCalled(['c1'], 1);
  t.backendCalled(['c2'], 1);
  assert.equal(t.clientAnswered(['c1'], 1), 'forward');
  assert.equal(t.clientAnswered(['c2'], 2), 'orphan', 'the calling backend has been replaced');
  assert.equal(t.clientAnswered(['zz'], 2), 'unknown');
  assert.equal(t.clientAnswered(['c1'], 1), 'unknown', 'an id is answered once');
  assert.equal(stats.orphanAnswers, 1);
  assert.equal(stats.unknownAnswers, 2);
});
