// Reading and writing a config value by its dotted path ("failover.backoff.initial").

export function valueAt(obj: object, path: string): unknown {
  return path.split('.').reduce<unknown>((o, k) => (o as Record<string, unknown> | undefined)?.[k], obj);
}

export function setValueAt(obj: object, path: string, value: unknown): void {
  const keys = path.split('.');
  const last = keys.pop()!;
  let o = obj as Record<string, unknown>;
  for (const k of keys) {
    o[k] ??= {};
    o = o[k] as Record<string, unknown>;
  }
  o[last] = value;
}
