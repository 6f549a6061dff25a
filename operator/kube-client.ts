// Timeouts on the operator's API requests. client-node 2.0.1 gives its requests no timeout, so a
// request to an API server that stopped answering (a partition, not a reset) waits for undici's
// defaults: 300 s for the headers, then 300 s between body chunks. Watches are not concerned: they
// are long by design, end themselves (timeoutSeconds) and client-node aborts them after 30 s of silence.
import { KubeConfig, Observable, type ConfigurationOptions, type ObservableMiddleware, type RequestContext } from '@kubernetes/client-node';

/**
 * A KubeConfig whose API clients (every `makeApiClient` client: they take the KubeConfig itself
 * as their authentication, applied to each request) end each request after `requestTimeoutMs`,
 * headers and body. client-node's Watch applies it too, but sends its own abort signal.
 */
export class KubeConfigWithTimeout extends KubeConfig {
  constructor(readonly requestTimeoutMs: number) {
    super();
  }

  override async applySecurityAuthentication(context: RequestContext): Promise<void> {
    await super.applySecurityAuthentication(context);
    context.setSignal(AbortSignal.timeout(this.requestTimeoutMs));
  }
}

/**
 * Per-call options giving one request its own timeout: its middleware runs after the
 * authentication, so its signal replaces the KubeConfig's. (The object-parameter clients hand
 * these options to the Observable ones unconverted, hence an Observable middleware.)
 */
export function requestTimeout(ms: number): ConfigurationOptions {
  const timeout: ObservableMiddleware = {
    pre: (context) => {
      context.setSignal(AbortSignal.timeout(ms));
      return new Observable(Promise.resolve(context));
    },
    post: (response) => new Observable(Promise.resolve(response)),
  };
  return { middleware: [timeout], middlewareMergeStrategy: 'append' };
}
