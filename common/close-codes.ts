// WebSocket close codes (RFC 6455 §7.4), shared by the data path and the admin API.

/** Codes an endpoint may put in a close frame (1005, 1006 and 1015 are reserved for reporting). */
export function isSendableCloseCode(code: number): boolean {
  return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) || (code >= 3000 && code <= 4999);
}

/** A close reason must fit a control frame: at most 123 bytes of UTF-8. */
export const MAX_CLOSE_REASON_BYTES = 123;
