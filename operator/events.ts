// Events (events.k8s.io/v1) about a WsBalancer, for `kubectl describe` and `kubectl events`.
import { EventsV1Api, V1MicroTime, type KubeConfig } from '@kubernetes/client-node';
import { randomBytes } from 'node:crypto';
import type { Logger } from '../common/logger.js';
import { API_VERSION, KIND } from './api/wsbalancer.js';

export const REPORTING_CONTROLLER = 'baton.dev/operator';

export type EventReason =
  | 'PreviewDetected'
  | 'PromotionStarted'
  | 'SessionsMigrated'
  | 'Promoted'
  | 'Aborted'
  | 'StepStarted'
  | 'WeightReached'
  | 'StepPromoted'
  | 'AnalysisPassed'
  | 'AnalysisFailed'
  | 'SidecarSyncFailed'
  | 'InvalidSpec'
  | 'BackendSetRefused'
  | 'EndpointsUnresolved'
  | 'AdminTokenUnreadable'
  | 'PodsWithoutSidecar';

export interface EventTarget {
  namespace: string;
  name: string;
  uid?: string;
}

export class EventRecorder {
  private readonly api: EventsV1Api;

  constructor(
    kc: KubeConfig,
    private readonly instance: string,
    private readonly log: Logger,
  ) {
    this.api = kc.makeApiClient(EventsV1Api);
  }

  /** Best effort: a failed event is logged, never fails the reconcile. */
  async record(target: EventTarget, type: 'Normal' | 'Warning', reason: EventReason, note: string, action = reason): Promise<void> {
    const now = new V1MicroTime(Date.now());
    try {
      await this.api.createNamespacedEvent({
        namespace: target.namespace,
        body: {
          metadata: { name: `${target.name}.${randomBytes(8).toString('hex')}`, namespace: target.namespace },
          eventTime: now,
          type,
          reason,
          action,
          // The API limits notes to 1 kB.
          note: note.length > 1000 ? `${note.slice(0, 997)}...` : note,
          reportingController: REPORTING_CONTROLLER,
          reportingInstance: this.instance,
          regarding: { apiVersion: API_VERSION, kind: KIND, namespace: target.namespace, name: target.name, ...(target.uid ? { uid: target.uid } : {}) },
        },
      });
    } catch (err) {
      this.log.warn({ err: (err as Error).message, reason, wsbalancer: `${target.namespace}/${target.name}` }, 'could not record an event');
    }
  }
}
