// One leg of a session (the client's, or a backend's) as the session sees it: an open WebSocket it
// can send to, pause, ping and close, and that reports what arrives to the session (its sink).
// Two kinds: FramePeer (frame-level relay, our framing) and WsPeer (`ws`, for permessage-deflate).

/** RFC 6455 ready states, as `ws` numbers them. */
export const CONNECTING = 0;
export const OPEN = 1;
export const CLOSING = 2;
export const CLOSED = 3;

export interface Peer {
  readonly protocol: string;
  readonly readyState: number;
  /** Bytes written and not yet handed to the kernel. */
  readonly bufferedAmount: number;
  /** Frames can be written to and read from it verbatim (no extension changes their payload). */
  readonly verbatim: boolean;
  /** The session's number for this leg (0 for the client's). */
  no: number;
  /** Starts reporting to `sink`; events before this are held. */
  attach(sink: PeerSink): void;
  /** One whole message; `done` runs once it is handed to the kernel. */
  send(data: Buffer, isBinary: boolean, done?: () => void): void;
  /** Whole frames read verbatim from another verbatim peer (only when `verbatim`). */
  writeFrames(frames: Buffer, done?: () => void): void;
  ping(): void;
  /** Starts the closing handshake (no code: an empty close frame). */
  close(code?: number, reason?: string): void;
  /** Drops the connection at once. */
  terminate(): void;
  pause(): void;
  resume(): void;
  /** Writes until uncork() go out in one system call. */
  cork(): void;
  uncork(): void;
}

/** An error a peer reports before it closes; `closeCode` is set when the peer broke the protocol. */
export interface PeerError extends Error {
  closeCode?: number;
}

/** What a peer reports to its session. */
export interface PeerSink {
  /**
   * A whole message has arrived (the last frame's FIN): the verbatim peer its frames go to, or
   * null to have it delivered by message(). `payloadBytes` is its size unmasked.
   */
  route(from: Peer, payloadBytes: number): Peer | null;
  /** Frames of whole messages routed to `to`, in one buffer (several messages of one read). */
  relay(from: Peer, to: Peer, frames: Buffer): void;
  message(from: Peer, data: Buffer, isBinary: boolean): void;
  pong(from: Peer): void;
  /** The connection is gone; `code` 1005 = a close without a code, 1006 = no close frame. */
  disconnected(from: Peer, code: number, reason: Buffer): void;
  error(from: Peer, err: PeerError): void;
}

/** A sink for a peer nobody reads from (a health probe's): what it reports is dropped. */
export const DISCARD: PeerSink = {
  route: () => null,
  relay: () => undefined,
  message: () => undefined,
  pong: () => undefined,
  disconnected: () => undefined,
  error: () => undefined,
};
