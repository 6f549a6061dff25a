// One direction of a session's relay (client → backend, or backend → client): the per-message path
// and its backpressure. No allocation per message: the callbacks are made once per direction.
import type { Peer } from './wire/peer.js';

export class Relay {
  /** The peer that messages come from: paused while the other side's queue is too long. */
  source: Peer | null = null;
  /** Whether `source` is paused for backpressure (a paused socket can't read its pong either). */
  paused = false;
  private drains = 0;
  /**
   * The peer corked until the end of the current tick: the messages of one read go out in one
   * write instead of one write each (most of a proxy's cost is in those system calls).
   */
  private corked: Peer | null = null;
  private readonly uncork = (): void => {
    const p = this.corked;
    this.corked = null;
    p?.uncork();
  };
  private readonly onDrained = (): void => {
    if (this.drains > 0 && --this.drains === 0 && this.paused) {
      this.paused = false;
      this.source?.resume();
    }
  };

  /** Sends one message to `to`; past `highWaterMark` queued bytes, stops reading the source until it drains. */
  forward(to: Peer, data: Buffer, isBinary: boolean, highWaterMark: number): void {
    if (this.corked === null) {
      this.corked = to;
      to.cork();
      process.nextTick(this.uncork);
    }
    if (to.bufferedAmount + data.length > highWaterMark) {
      to.send(data, isBinary, this.holdSource());
    } else {
      to.send(data, isBinary);
    }
  }

  /** Writes whole frames read verbatim from the source (one read's worth: already one write). */
  forwardFrames(to: Peer, frames: Buffer, highWaterMark: number): void {
    if (to.bufferedAmount + frames.length > highWaterMark) to.writeFrames(frames, this.holdSource());
    else to.writeFrames(frames);
  }

  /** The source stops until the write this callback is given has drained. */
  private holdSource(): () => void {
    this.drains++;
    if (!this.paused && this.source !== null) {
      this.paused = true;
      this.source.pause();
    }
    return this.onDrained;
  }

  /** The other side changed (a leg left): writes pending to it no longer hold the source back. */
  reset(source: Peer | null): void {
    this.drains = 0;
    if (this.paused) {
      this.paused = false;
      this.source?.resume();
    }
    this.source = source;
  }
}
