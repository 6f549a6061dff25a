// TLS on both legs: the client-facing listener (wss://, mTLS) and wss:// backends (CA, SNI,
// certificate checks, client certificates). Real TLS on 127.0.0.1 with a PKI made at test time.
import assert from 'node:assert/strict';
import { createServer as createHttpsServer, type ServerOptions } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { after, afterEach, before, describe, test } from 'node:test';
import { WebSocketServer, type WebSocket } from 'ws';
import type { Sidecar } from '../sidecar/sidecar.js';
import { startEchoBackend, stopWsServer, type EchoBackend } from '../tools/echo-backend.js';
import { makePki, type TestPki } from './certs.js';
import { TestDnsServer } from './dns-server.js';
import { startSidecar, TestClient, waitFor } from './helpers.js';

/** What a wss backend saw of one accepted WebSocket connection. */
interface TlsConnection {
  servername: string | false | null;
  peerCN: string | string[] | undefined;
  authorized: boolean;
  path: string;
}

interface WssBackend {
  port: number;
  /** Upgrades that became WebSocket sessions. */
  connections: TlsConnection[];
  /** TLS handshakes the server refused or that failed (tlsClientError). */
  tlsErrors: string[];
  close(): Promise<void>;
}

/** A wss echo backend: https server + ws WebSocketServer (noServer); replies "<id>|<text>". */
async function startWssBackend(id: string, tls: ServerOptions): Promise<WssBackend> {
  const server = createHttpsServer(tls, (_req, res) => {
    res.writeHead(200);
    res.end('wss backend\n');
  });
  const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false });
  const connections: TlsConnection[] = [];
  const tlsErrors: string[] = [];
  server.on('tlsClientError', (err) => tlsErrors.push(err.message));
  server.on('upgrade', (req, socket, head) => {
    wss.handleUpgrade(req, socket, head, (ws: WebSocket) => {
      const s = req.socket as TLSSocket;
      const peer = s.getPeerCertificate();
      connections.push({
        servername: s.servername,
        peerCN: peer && 'subject' in peer && peer.subject ? peer.subject.CN : undefined,
        authorized: s.authorized,
        path: req.url ?? '',
      });
      ws.on('error', () => {});
      ws.on('message', (data: Buffer, isBinary: boolean) => ws.send(isBinary ? data : `${id}|${data.toString()}`, { binary: isBinary }));
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  return {
    port: (server.address() as AddressInfo).port,
    connections,
    tlsErrors,
    close: () => stopWsServer(server, wss),
  };
}

/** Connects, sends one text message and waits for its echo; returns the echoed text. */
async function roundTrip(c: TestClient, text: string): Promise<string> {
  const before = c.received.length;
  c.ws.send(text);
  await c.waitForCount(before + 1, 3000);
  return c.received[before]!.data.toString();
}

/** A connect that must fail: returns the error (status set for an HTTP refusal). */
async function connectFails(url: string, opts: Parameters<typeof TestClient.connect>[2] = {}): Promise<Error & { status?: number; code?: string }> {
  try {
    const c = await TestClient.connect(url, [], opts);
    c.close();
  } catch (err) {
    return err as Error & { status?: number };
  }
  assert.fail(`connecting to ${url} should have failed`);
}

let pki: TestPki;
before(() => {
  pki = makePki();
});
after(() => pki.cleanup());

// ---- the client-facing listener ------------------------------------------------------------

describe('frontend TLS', () => {
  let sidecar: Sidecar | undefined;
  let backend: EchoBackend | undefined;
  afterEach(async () => {
    await sidecar?.stop(0);
    sidecar = undefined;
    await backend?.close();
    backend = undefined;
  });

  test('wss:// client that trusts the CA echoes through to a plain ws:// backend; one that does not is refused', async () => {
    backend = await startEchoBackend({ id: 'plain', tag: true });
    // startSidecar writes the listen: section itself, so the TLS keys come from the environment.
    ({ sidecar } = await startSidecar(`backends:\n  - { id: plain, url: "${backend.url}" }\n`, {
      BATON_LISTEN_TLS_CERT_FILE: pki.server.certFile,
      BATON_LISTEN_TLS_KEY_FILE: pki.server.keyFile,
    }));
    const wss = `wss://127.0.0.1:${sidecar.address().port}`;

    const c = await TestClient.connect(`${wss}/secure`, [], { ca: pki.ca.cert });
    assert.equal(await roundTrip(c, 'hello over tls'), 'plain|hello over tls');
    assert.equal(sidecar.sessions.size, 1);
    c.close();
    await c.waitForClose();

    // No CA given: the system store does not know the test CA.
    const untrusting = await connectFails(`${wss}/secure`);
    assert.match(String(untrusting.code), /SELF_SIGNED|UNABLE_TO_GET_ISSUER|UNABLE_TO_VERIFY/, `got ${untrusting.code}: ${untrusting.message}`);
    // Trusting only an unrelated CA: same.
    const wrongCa = await connectFails(`${wss}/secure`, { ca: pki.otherCa.cert });
    assert.match(String(wrongCa.code), /SELF_SIGNED|UNABLE_TO_GET_ISSUER|UNABLE_TO_VERIFY/, `got ${wrongCa.code}: ${wrongCa.message}`);
    // A plain ws:// client on the TLS port gets no WebSocket either.
    await connectFails(`ws://127.0.0.1:${sidecar.address().port}/secure`);
    assert.equal(sidecar.sessions.size, 0, 'no session from a failed TLS handshake');
  });

  test('mTLS: listen.tls.caFile refuses clients without a certificate (or with a foreign one) and accepts one signed by the CA', async () => {
    backend = await startEchoBackend({ id: 'plain', tag: true });
    ({ sidecar } = await startSidecar(`backends:\n  - { id: plain, url: "${backend.url}" }\n`, {
      BATON_LISTEN_TLS_CERT_FILE: pki.server.certFile,
      BATON_LISTEN_TLS_KEY_FILE: pki.server.keyFile,
      BATON_LISTEN_TLS_CA_FILE: pki.ca.certFile,
    }));
    const wss = `wss://127.0.0.1:${sidecar.address().port}/mtls`;

    const noCert = await connectFails(wss, { ca: pki.ca.cert });
    assert.equal(noCert.status, undefined, `refused at the TLS layer, not by HTTP: ${noCert.message}`);
    const foreign = await connectFails(wss, { ca: pki.ca.cert, cert: pki.otherClient.cert, key: pki.otherClient.key });
    assert.equal(foreign.status, undefined, `refused at the TLS layer, not by HTTP: ${foreign.message}`);
    assert.equal(backend.clients.size, 0, 'refused clients never reach a backend');

    const c = await TestClient.connect(wss, [], { ca: pki.ca.cert, cert: pki.client.cert, key: pki.client.key });
    assert.equal(await roundTrip(c, 'mutual'), 'plain|mutual');
    c.close();
  });
});

// ---- wss:// backends -----------------------------------------------------------------------

describe('TLS to backends', () => {
  let sidecar: Sidecar | undefined;
  const servers: WssBackend[] = [];
  afterEach(async () => {
    await sidecar?.stop(0);
    sidecar = undefined;
    for (const s of servers.splice(0)) await s.close();
  });

  async function backendWith(tls: ServerOptions): Promise<WssBackend> {
    const b = await startWssBackend('tls', tls);
    servers.push(b);
    return b;
  }

  /** A sidecar in front of one backend; returns its ws:// url. */
  async function sidecarFor(backendUrl: string, upstreamTls: Record<string, string | boolean> = {}): Promise<string> {
    const lines = Object.entries(upstreamTls).map(([k, v]) => `    ${k}: ${typeof v === 'string' ? JSON.stringify(v) : v}`);
    const upstream = lines.length ? `upstream:\n  tls:\n${lines.join('\n')}\n` : '';
    let url: string;
    ({ sidecar, url } = await startSidecar(`${upstream}health:\n  breaker:\n    threshold: 0\nbackends:\n  - { id: tls, url: "${backendUrl}" }\n`));
    return url;
  }

  test('upstream.tls.caFile = test CA: sessions work over wss', async () => {
    const b = await backendWith({ cert: pki.server.cert, key: pki.server.key });
    const url = await sidecarFor(`wss://127.0.0.1:${b.port}`, { caFile: pki.ca.certFile });
    const c = await TestClient.connect(`${url}/over-tls`);
    assert.equal(await roundTrip(c, 'hi'), 'tls|hi');
    assert.equal(b.connections.length, 1);
    assert.equal(b.connections[0]!.path, '/over-tls');
    c.close();
  });

  test('no caFile (system CAs): the backend certificate is not trusted and the client gets 502', async () => {
    const b = await backendWith({ cert: pki.server.cert, key: pki.server.key });
    const url = await sidecarFor(`wss://127.0.0.1:${b.port}`);
    const err = await connectFails(`${url}/x`);
    assert.equal(err.status, 502);
    assert.equal(b.connections.length, 0, 'no WebSocket reached the backend');
    assert.equal(sidecar!.sessions.size, 0);
  });

  test('rejectUnauthorized: false without a CA: sessions work', async () => {
    const b = await backendWith({ cert: pki.server.cert, key: pki.server.key });
    const url = await sidecarFor(`wss://127.0.0.1:${b.port}`, { rejectUnauthorized: false });
    const c = await TestClient.connect(`${url}/insecure`);
    assert.equal(await roundTrip(c, 'anyway'), 'tls|anyway');
    c.close();
  });

  test('SNI: an IP URL with a cert only for backend.test fails by default (502); servername: backend.test works and is sent as SNI', async () => {
    const b = await backendWith({ cert: pki.serverNameOnly.cert, key: pki.serverNameOnly.key });
    const backendUrl = `wss://127.0.0.1:${b.port}`;

    let url = await sidecarFor(backendUrl, { caFile: pki.ca.certFile });
    const err = await connectFails(`${url}/sni`);
    assert.equal(err.status, 502, 'certificate name 127.0.0.1 does not match backend.test');
    assert.equal(b.connections.length, 0);
    await sidecar!.stop(0);

    url = await sidecarFor(backendUrl, { caFile: pki.ca.certFile, servername: 'backend.test' });
    const c = await TestClient.connect(`${url}/sni`);
    assert.equal(await roundTrip(c, 'named'), 'tls|named');
    assert.equal(b.connections.length, 1);
    assert.equal(b.connections[0]!.servername, 'backend.test', 'the backend saw SNI backend.test');
    c.close();
  });

  test('a backend expanded from a name (dns.resolve) connects to its address with the name as SNI and certificate name, on both dial paths', async () => {
    const b = await backendWith({ cert: pki.serverNameOnly.cert, key: pki.serverNameOnly.key });
    const dns = await TestDnsServer.start();
    try {
      dns.set('backend.test', ['127.0.0.1']);
      for (const perMessageDeflate of [false, true]) {
        let url: string;
        ({ sidecar, url } = await startSidecar(
          `upstream: { perMessageDeflate: ${perMessageDeflate}, tls: { caFile: "${pki.ca.certFile}" } }\n` +
            `dns: { resolve: true, servers: ["${dns.address}"] }\nbackends:\n  - url: "wss://backend.test:${b.port}"\n`,
        ));
        assert.deepEqual([...sidecar.pool.backends.keys()], [`backend.test/127.0.0.1:${b.port}`]);
        const c = await TestClient.connect(`${url}/dns`);
        assert.equal(await roundTrip(c, 'by name'), 'tls|by name');
        assert.equal(b.connections.at(-1)!.servername, 'backend.test', `SNI backend.test (upstream.perMessageDeflate: ${perMessageDeflate})`);
        c.close();
        await sidecar.stop(0);
      }
    } finally {
      await dns.close();
    }
  });

  test('client certificate: a backend that requires one refuses the sidecar without upstream.tls.certFile (502) and sees its CN with it', async () => {
    const b = await backendWith({ cert: pki.server.cert, key: pki.server.key, ca: pki.ca.cert, requestCert: true, rejectUnauthorized: true });
    const backendUrl = `wss://127.0.0.1:${b.port}`;

    let url = await sidecarFor(backendUrl, { caFile: pki.ca.certFile });
    const err = await connectFails(`${url}/mtls`);
    assert.equal(err.status, 502);
    assert.equal(b.connections.length, 0);
    await waitFor(() => b.tlsErrors.length > 0, 'the backend to report the refused TLS client');
    assert.match(b.tlsErrors[0]!, /peer did not return a certificate/);
    await sidecar!.stop(0);

    url = await sidecarFor(backendUrl, { caFile: pki.ca.certFile, certFile: pki.client.certFile, keyFile: pki.client.keyFile });
    const c = await TestClient.connect(`${url}/mtls`);
    assert.equal(await roundTrip(c, 'with cert'), 'tls|with cert');
    assert.equal(b.connections.length, 1);
    assert.equal(b.connections[0]!.authorized, true);
    assert.equal(b.connections[0]!.peerCN, 'baton-sidecar');
    c.close();
  });
});
