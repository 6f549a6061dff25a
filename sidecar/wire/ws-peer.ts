// A session leg on a `ws` WebSocket: used when permessage-deflate is negotiated on it (the payloads
// are compressed per leg, so frames cannot pass through unchanged; see frame-peer.ts for the rest).
import type { Socket } from 'node:net';
import type { WebSocket } from 'ws';
import type { Peer, PeerError, PeerSink } from './peer.js';

const SEND_BINARY = { binary: true } as const;
const SEND_TEXT = { binary: false } as const;

const kPeer = Symbol('wsPeer');
type TaggedSocket = WebSocket & { [kPeer]: WsPeer };

// Shared listeners (no closure per connection): each WebSocket points at its peer.
function onMessage(this: WebSocket, data: Buffer, isBinary: boolean): void {
  const peer = (this as TaggedSocket)[kPeer];
  peer.sink!.message(peer, data, isBinary);
}
function onPong(this: WebSocket): void {
  const peer = (this as TaggedSocket)[kPeer];
  peer.sink!.pong(peer);
}
function onClose(this: WebSocket, code: number, reason: Buffer): void {
  const peer = (this as TaggedSocket)[kPeer];
  peer.sink!.disconnected(peer, code, reason);
}
function onError(this: WebSocket, err: Error & { code?: string }): void {
  const peer = (this as TaggedSocket)[kPeer];
  const e: PeerError = err;
  const code = err.code ? PROTOCOL_ERROR_CODES[err.code] : undefined;
  if (code !== undefined) e.closeCode = code;
  peer.sink?.error(peer, e);
}

/** ws error codes that mean the peer broke the protocol, with the close code they deserve. */
const PROTOCOL_ERROR_CODES: Record<string, number> = {
  WS_ERR_UNSUPPORTED_MESSAGE_LENGTH: 1009,
  WS_ERR_INVALID_UTF8: 1007,
  WS_ERR_INVALID_CLOSE_CODE: 1002,
  WS_ERR_INVALID_OPCODE: 1002,
  WS_ERR_INVALID_CONTROL_PAYLOAD_LENGTH: 1002,
  WS_ERR_EXPECTED_FIN: 1002,
  WS_ERR_EXPECTED_MASK: 1002,
  WS_ERR_UNEXPECTED_MASK: 1002,
  WS_ERR_UNEXPECTED_RSV_1: 1002,
  WS_ERR_UNEXPECTED_RSV_2_3: 1002,
};

export class WsPeer implements Peer {
  readonly verbatim = false;
  no = 0;
  /** @internal (listeners) */
  sink: PeerSink | null = null;

  /** `ws` must be paused (dialBackend and the upgrade hand it over so): nothing is read until resume(). */
  constructor(private readonly ws: WebSocket) {
    (ws as TaggedSocket)[kPeer] = this;
    ws.removeAllListeners('error');
    ws.on('error', onError);
  }

  get protocol(): string {
    return this.ws.protocol;
  }
  get readyState(): number {
    return this.ws.readyState;
  }
  get bufferedAmount(): number {
    return this.ws.bufferedAmount;
  }

  attach(sink: PeerSink): void {
    this.sink = sink;
    this.ws.on('message', onMessage);
    this.ws.on('pong', onPong);
    this.ws.on('close', onClose);
  }

  send(data: Buffer, isBinary: boolean, done?: () => void): void {
    this.ws.send(data, isBinary ? SEND_BINARY : SEND_TEXT, done);
  }

  writeFrames(): void {
    throw new Error('a permessage-deflate leg cannot take frames verbatim');
  }

  ping(): void {
    this.ws.ping();
  }

  close(code?: number, reason?: string): void {
    this.ws.close(code, reason);
  }

  terminate(): void {
    this.ws.terminate();
  }

  pause(): void {
    this.ws.pause();
  }

  resume(): void {
    this.ws.resume();
  }

  cork(): void {
    this.tcp().cork();
  }

  uncork(): void {
    this.tcp().uncork();
  }

  /** ws keeps the TCP socket private; batching writes needs it (stable in ws 8). */
  private tcp(): Socket {
    return (this.ws as unknown as { _socket: Socket })._socket;
  }
}
