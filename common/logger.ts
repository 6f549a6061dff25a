import { pino, type Logger } from 'pino';

export type { Logger };

/** The log levels of both roles (sidecar logLevel, operator --log-level); silent logs nothing. */
export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** How long a buffered logger holds lines at most. */
const FLUSH_MS = 100;
/** A buffered logger writes once this much is held (sonic-boom's largest single write). */
const BATCH_CHARS = 16 * 1024;

/** What the buffered logger writes its batches to: pino's destination, one write per batch. */
type Destination = ReturnType<typeof pino.destination>;

/**
 * Holds log lines and hands them to the destination as one string per batch. sonic-boom (4.2)
 * measures its pending chunk with Buffer.byteLength at every write, which flattens what it has
 * concatenated so far: with its own minLength, each line cost a copy of everything pending (7 KiB
 * of garbage per line during a mass failover, when writes are in flight). Here a line costs an
 * array slot, and the batch is joined once.
 */
class LineBatch {
  private readonly lines: string[] = [];
  private chars = 0;

  constructor(private readonly out: Destination) {}

  /** pino's stream interface. */
  write(line: string): void {
    this.lines.push(line);
    this.chars += line.length;
    if (this.chars >= BATCH_CHARS) this.flush();
  }

  /** Writes the held lines (pino's logger.flush passes a callback). */
  flush(cb?: (err?: Error) => void): void {
    if (this.lines.length > 0) {
      this.out.write(this.lines.join(''));
      this.lines.length = 0;
      this.chars = 0;
    }
    cb?.();
  }
}

/**
 * JSON logs on stdout; every session event carries `session`, `backend` and `reason` fields.
 * `buffered`: lines go out in batches (at least every FLUSH_MS) instead of one write each — the
 * sidecar logs each session's close, and in a reconnect storm a system call per line would cost
 * more than the session's handshake. Lines still held are written when the process exits; a
 * SIGKILL loses at most the last FLUSH_MS of them.
 */
export function createLogger(level: LogLevel, component: string, opts: { buffered?: boolean } = {}): Logger {
  const options = {
    level,
    base: { component, pid: process.pid },
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label: string) => ({ level: label }) },
  };
  if (!opts.buffered) return pino(options);
  // Synchronous writes, one per batch: what is held is bounded (a stalled stdout stalls the
  // process rather than growing its memory), and nothing is left in flight at exit.
  const batch = new LineBatch(pino.destination({ dest: 1, sync: true }));
  setInterval(() => batch.flush(), FLUSH_MS).unref();
  process.on('exit', () => batch.flush());
  return pino(options, batch);
}
