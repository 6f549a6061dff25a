// One direction of a session's relay (client → backend, or backend → client): the per-frame path.
// No allocation per frame: the callbacks are made once per direction.
import type { Socket } from 'node:net';
import type { WebSocket } from 'ws';

const SEND_BINARY = { binary: true } as const;
const SEND_TEXT = { binary: false } as const;

/** ws keeps the TCP socket private; batching writes needs it (stable in ws 8). */
function tcpOf(ws: WebSocket): Socket {
  return (ws as unknown as { _socket: Socket })._socket;
}

export class Relay {
  /** The socket that frames come from: paused while the other side's queue is too long. */
  source: WebSocket | null = null;
  /** Whether `source` is paused for backpressure (a paused socket can't read its pong either). */
  paused = false;
  private drains = 0;
  /**
   * The socket corked until the end of the current tick: the frames of one read go out in one
   * write instead of one write each (most of a proxy's cost is in those system calls).
   */
  private corked: Socket | null = null;
  private readonly uncork = (): void => {
    const s = this.corked;
    this.corked = null;
    s?.uncork();
  };
  private readonly onDrained = (): void => {
    if (this.drains > 0 && --this.drains === 0 && this.paused) {
      this.paused = false;
      this.source?.resume();
    }
  };

  /** Sends one frame to `to`; past `highWaterMark` queued bytes, stops reading the source until it drains. */
  forward(to: WebSocket, data: Buffer, isBinary: boolean, highWaterMark: number): void {
    if (this.corked === null) {
      this.corked = tcpOf(to);
      this.corked.cork();
      process.nextTick(this.uncork);
    }
    if (to.bufferedAmount + data.length > highWaterMark) {
      this.drains++;
      to.send(data, isBinary ? SEND_BINARY : SEND_TEXT, this.onDrained);
      if (!this.paused && this.source !== null) {
        this.paused = true;
        this.source.pause();
      }
    } else {
      to.send(data, isBinary ? SEND_BINARY : SEND_TEXT);
    }
  }

  /** The other side changed (a leg left): writes pending to it no longer hold the source back. */
  reset(source: WebSocket | null): void {
    this.drains = 0;
    if (this.paused) {
      this.paused = false;
      this.source?.resume();
    }
    this.source = source;
  }
}
