// The table of open sessions (sidecar/churn-map.ts): what the sidecar, the admin API and the split
// keeper read of it behaves as the Map it replaced.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ChurnMap } from '../sidecar/churn-map.js';

describe('ChurnMap', () => {
  test('set, get, delete and size, including keys that look like numbers or Object.prototype members', () => {
    const m = new ChurnMap<{ id: string }>();
    for (const id of ['a-1', '7', 'constructor', '__proto__', 'toString']) m.set(id, { id });
    assert.equal(m.size, 5);
    assert.deepEqual(m.get('__proto__'), { id: '__proto__' });
    assert.equal(m.get('hasOwnProperty'), undefined);
    m.set('7', { id: 'seven' });
    assert.equal(m.size, 5, 'replacing a value does not count it twice');
    assert.equal(m.delete('constructor'), true);
    assert.equal(m.delete('constructor'), false);
    assert.equal(m.size, 4);
    assert.deepEqual(
      [...m.values()].map((v) => v.id).sort(),
      ['__proto__', 'a-1', 'seven', 'toString'],
    );
  });

  test('values(): an entry deleted before the iteration reaches it is skipped, as a Map does', () => {
    const m = new ChurnMap<string>();
    for (const id of ['s-1', 's-2', 's-3', 's-4']) m.set(id, id);
    const seen: string[] = [];
    for (const v of m.values()) {
      seen.push(v);
      if (v === 's-1') m.delete('s-3');
    }
    assert.deepEqual(seen, ['s-1', 's-2', 's-4']);
  });

  test('many sessions opened and closed leave it empty', () => {
    const m = new ChurnMap<number>();
    for (let i = 0; i < 10_000; i++) {
      m.set(`s-${i}`, i);
      if (i >= 32) m.delete(`s-${i - 32}`);
    }
    for (let i = 10_000 - 32; i < 10_000; i++) m.delete(`s-${i}`);
    assert.equal(m.size, 0);
    assert.deepEqual([...m.values()], []);
  });
});
