// Session codecs: a protocol-aware view of a session's messages. A codec classifies a frame as a
// request (with its id), a response (with the id it answers) or anything else; the sidecar uses
// that to replay unanswered requests after a failover and to drop duplicate answers. A codec of a
// protocol whose session state lives on the backend (a login, subscriptions, a namespace) also
// keeps that state per session and replays it to a new backend before anything else.

/** What one message is. Batches (JSON-RPC) carry several ids. */
export type MessageKind = 'request' | 'response' | 'other' | 'malformed';

/** Who sent the message: the client (e.g. the charger) or the backend (e.g. the central system). */
export type Sender = 'client' | 'backend';

export interface SessionCodec {
  /** Name used in config, logs and metric labels. */
  readonly name: string;
  /**
   * Classifies one message. For 'request' and 'response', pushes the id(s) it carries or answers
   * onto `ids` (cleared by the caller). Must look only at what it needs (the frame's first bytes
   * for the type and id), never build the whole payload, and never throw: a frame it cannot read
   * is 'malformed' (it is still forwarded untouched).
   */
  classify(data: Buffer, isBinary: boolean, from: Sender, ids: string[]): MessageKind;
  /** Subprotocols that name the protocol: with `codec.default: auto` the codec is chosen when the backend accepts one. */
  readonly subprotocols?: readonly string[];
  /** For a protocol without a subprotocol (socket.io): whether a request (path and query) is one of its sessions. */
  matchesRequest?(path: string): boolean;
  /** Present for a protocol whose session can be resumed on a new backend: one state keeper per session. */
  createState?(limits: StateLimits): ProtocolState;
}

/** Bounds of one session's kept state; past either the session can no longer be resumed. */
export interface StateLimits {
  maxFrames: number;
  maxBytes: number;
}

/** A frame to send. */
export interface Frame {
  data: Buffer;
  isBinary: boolean;
  /**
   * A replay frame that may only go once the new backend has answered the replay (resumeAnswer
   * said 'resumed'); it then goes first, before unanswered requests and held messages. For a
   * server that handles frames concurrently and refuses operations until its handshake is
   * acknowledged (graphql-transport-ws closes a `subscribe` before its connection_ack with 4401).
   */
  afterResume?: boolean;
}

/**
 * What a frame from the new backend is while it answers the replay:
 * - 'swallow': an answer to the replay (the client already had it): dropped;
 * - 'resumed': dropped, and the new backend has answered all the resume waits for: the session goes on;
 * - 'pass': not an answer to the replay: delivered to the client;
 * - a refusal (auth expired, a protocol error answer): the frame goes to the client when `forward`,
 *   then the client is closed with `code` and `reason`, as a fresh connect would have ended.
 */
export type ResumeVerdict = 'swallow' | 'resumed' | 'pass' | ResumeRefusal;

export interface ResumeRefusal {
  readonly refused: true;
  readonly forward: boolean;
  readonly code: number;
  readonly reason: string;
}

/**
 * The protocol state of one client session: kept current from the frames that pass (a later
 * UNSUBSCRIBE or `complete` removes what it cancels), replayed to a new backend first. Must never
 * throw; a frame it cannot read is ignored. Frames handed in are the socket's buffers: copy what is kept.
 */
export interface ProtocolState {
  /** A client frame that has gone to the backend (not one held, not one the sidecar replayed). */
  sent(data: Buffer, isBinary: boolean): void;
  /** A frame the backend sent to the client (a server-side end of a subscription, for example). */
  received(data: Buffer, isBinary: boolean): void;
  /** Why the session cannot be resumed now (state over its bound, a transaction open), or null. */
  unresumable(): string | null;
  /**
   * Whether the backend's frames so far end inside one of the protocol's packets (MQTT packets may
   * span frames: aedes writes each field as its own). The session holds such frames from the client
   * until the packet is whole (up to codec.maxStateBytes), so that a backend lost mid-packet leaves
   * the client between two packets, where the session can still be resumed. Absent = never.
   */
  midPacket?(): boolean;
  /** The held frames of a packet the backend never finished were dropped: its stream starts afresh. */
  packetDropped?(): void;
  /**
   * Whether the backend owes this session nothing (MQTT: no QoS 1/2 exchange in flight). A planned
   * migration waits for it, as for a codec's tracked requests; absent = always.
   */
  settled?(): boolean;
  /** The frames that rebuild the session on a new backend, in their original order. */
  replay(): Frame[];
  /** A frame from the new backend after the replay, until the verdict 'resumed' or a refusal. */
  resumeAnswer(data: Buffer, isBinary: boolean): ResumeVerdict;
  /**
   * A planned migration: frames the old backend gets just before its close, so that it ends the
   * session as a client leaving on purpose would (MQTT: DISCONNECT, so the broker publishes no Will).
   */
  farewell?(): Frame[];
}

/** What a user's codec module exports: `export function createCodec(): SessionCodec`. */
export interface CodecModule {
  createCodec(): SessionCodec;
}
