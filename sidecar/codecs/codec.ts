// Session codecs: a protocol-aware view of a session's messages. A codec only classifies a frame
// as a request (with its id), a response (with the id it answers) or anything else; the sidecar
// uses that to replay unanswered requests after a failover and to drop duplicate answers.

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
}

/** What a user's codec module exports: `export function createCodec(): SessionCodec`. */
export interface CodecModule {
  createCodec(): SessionCodec;
}
