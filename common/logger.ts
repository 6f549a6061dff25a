import { pino, type Logger } from 'pino';

export type { Logger };

/** The log levels of both roles (sidecar logLevel, operator --log-level); silent logs nothing. */
export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** How long a buffered logger holds lines at most. */
const FLUSH_MS = 100;

/**
 * JSON logs on stdout; every session event carries `session`, `backend` and `reason` fields.
 * `buffered`: lines go out in batches (at least every FLUSH_MS) instead of one write each — the
 * sidecar logs each session's open and close, and in a reconnect storm a system call per line
 * would cost more than the session's handshake. Lines still held are written when the process
 * exits; a SIGKILL loses at most the last FLUSH_MS of them.
 */
export function createLogger(level: LogLevel, component: string, opts: { buffered?: boolean } = {}): Logger {
  const options = {
    level,
    base: { component, pid: process.pid },
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label: string) => ({ level: label }) },
  };
  if (!opts.buffered) return pino(options);
  const destination = pino.destination({ dest: 1, sync: false, minLength: 4096 });
  setInterval(() => destination.flush(), FLUSH_MS).unref();
  return pino(options, destination);
}
