// The sidecar's validated configuration. The YAML file has exactly this shape (camelCase keys);
// durations are written as "250ms", "10s", "5m" or a number of milliseconds, sizes as "64KiB",
// "16MiB" or a number of bytes. Every field here is filled (defaults applied) after loading.

/** Milliseconds. */
export type Millis = number;

import type { BackendState } from '../vocabulary.js';

export type { BackendState };

export interface BackendSpec {
  /** Unique, [A-Za-z0-9._:/[\]-]{1,128}. Defaults to the URL's host:port. */
  id: string;
  /** ws:// or wss:// URL; the client's path and query are appended to its path. */
  url: string;
  /** Relative share of new sessions, 1..1000, default 1. */
  weight: number;
  /** Only used when no non-standby backend is usable. */
  standby: boolean;
  labels: Record<string, string>;
  state: BackendState;
  /** Config file only: expand the URL's host name to one backend per address (unset = dns.resolve). */
  resolve?: boolean;
  /** Set on a backend expanded from a name: the IP it connects to (Host, SNI and certificate check keep the URL's name). */
  address?: string;
}

export interface HostPort {
  host: string;
  port: number;
}

export interface TlsServerConfig {
  certFile: string;
  keyFile: string;
  /** Optional CA bundle to verify client certificates against (mTLS); empty = no client certs. */
  caFile: string;
}

export interface UpstreamTlsConfig {
  caFile: string;
  certFile: string;
  keyFile: string;
  /** SNI and certificate name check; empty = the URL's host. */
  servername: string;
  rejectUnauthorized: boolean;
}

export type BalancingAlgorithm = 'least-sessions' | 'round-robin' | 'consistent-hash';

export interface HashKey {
  source: 'path' | 'header' | 'query';
  /** Header or query parameter name (unused for `path`). */
  name: string;
}

export type LogLevel = 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal' | 'silent';

export interface SidecarConfig {
  listen: {
    address: HostPort;
    /** null = plain ws:// */
    tls: TlsServerConfig | null;
    maxHeaderBytes: number;
    /** Time a client has to send its complete upgrade request. */
    requestTimeout: Millis;
    perMessageDeflate: { enabled: boolean; threshold: number };
  };
  admin: {
    address: HostPort;
    tokenFile: string;
    token: string;
    /** Put /metrics behind the token too (it is open by default, like /healthz and /readyz). */
    metricsRequireToken: boolean;
  };
  logLevel: LogLevel;
  session: {
    /** Largest message accepted on either leg; larger closes the session with 1009. */
    maxMessageBytes: number;
    /** Bytes queued towards one leg before the other leg's socket is paused. */
    highWaterMarkBytes: number;
    pingInterval: Millis;
    pongTimeout: Millis;
    /** 0 = never. */
    idleTimeout: Millis;
    /** 0 = never; otherwise the session is migrated (planned) after this long. */
    maxLifetime: Millis;
    trustForwardedFor: boolean;
    /** Empty = pass every request header that is not blocked. */
    passRequestHeaders: string[];
    blockRequestHeaders: string[];
    /** Backend 101 response headers copied into the client's 101. */
    passResponseHeaders: string[];
  };
  failover: {
    closeCodes: number[];
    deadline: Millis;
    bufferMaxBytes: number;
    bufferMaxMessages: number;
    backoff: { initial: Millis; max: Millis; multiplier: number; jitter: number };
    reconnectHeader: { name: string; value: string };
    /** resume: move the session to another backend; close: close it with 1012 so the client reconnects. */
    mode: 'resume' | 'close';
    /** Planned migration: the longest the old backend is given to finish before the switch. */
    drainTimeout: Millis;
  };
  migration: {
    /** Without a codec, the old backend is done once it has sent nothing for this long. */
    quietPeriod: Millis;
    /** Without a codec, a backend that never goes quiet (a live feed) is let go after this long. */
    maxQuietWait: Millis;
  };
  balancer: {
    algorithm: BalancingAlgorithm;
    hashKey: HashKey;
    /** 0 = off; otherwise a new or recovered backend's weight ramps up over this long. */
    slowStart: Millis;
  };
  health: {
    breaker: { threshold: number; openBase: Millis; openMax: Millis };
    phi: { threshold: number; windowSize: number; minStdDev: Millis; acceptablePause: Millis };
    maxEjectedPercent: number;
    probe: { type: 'none' | 'websocket' | 'http'; interval: Millis; timeout: Millis; path: string };
  };
  upstream: {
    connectTimeout: Millis;
    handshakeTimeout: Millis;
    perMessageDeflate: boolean;
    tls: UpstreamTlsConfig;
    keepAlive: { enabled: boolean; initialDelay: Millis };
    /** Source address for backend connections; empty = the OS's choice. */
    localAddress: string;
  };
  codec: {
    /** auto | none | stateful | a built-in codec | module:/path/to/codec.js — for paths not matched below. */
    default: string;
    /** "prefix=codec" entries; the longest matching path prefix picks the codec. */
    paths: string[];
    maxTrackedRequests: number;
    maxTrackedBytes: number;
    /** A session's protocol state kept for replay: past either bound it cannot be resumed. */
    maxStateFrames: number;
    maxStateBytes: number;
    /** The longest a new backend may take to answer the replay. */
    resumeTimeout: Millis;
    /** An unanswered request is forgotten (and counted) after this long. */
    requestTimeout: Millis;
    /** A client's answer to a call from a backend that has since died: forward it to the new backend, or drop it. */
    orphanAnswers: 'forward' | 'drop';
  };
  shutdown: { grace: Millis };
  dns: {
    /** Default of backends[].resolve. */
    resolve: boolean;
    /** Re-resolve interval for an answer that gives no TTL (or TTL 0). */
    refresh: Millis;
    /** Bounds on the re-resolve interval a record's TTL gives. */
    minTtl: Millis;
    maxTtl: Millis;
    /** "ip" or "ip:port" of DNS servers; empty = the system's (resolv.conf). */
    servers: string[];
    timeout: Millis;
  };
  backends: BackendSpec[];
}
