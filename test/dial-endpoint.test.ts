// Where a dial goes, as pure functions: a backend's URL taken apart once (dialEndpoint), a client's
// path parsed once per session (clientTarget), and the two joined per dial (requestTarget).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { dialEndpoint, requestTarget } from '../sidecar/dial.js';
import { clientTarget } from '../sidecar/headers.js';

test('dialEndpoint: host, port, SNI and base path of ws, wss and IPv6 URLs; an address replaces only where TCP goes', () => {
  assert.deepEqual(dialEndpoint('ws://echo.app.svc:9000/base/?v=2'), {
    secure: false,
    host: 'echo.app.svc:9000',
    connectTo: 'echo.app.svc',
    port: 9000,
    servername: 'echo.app.svc',
    basePath: '/base',
    baseQuery: 'v=2',
    origin: 'ws://echo.app.svc:9000',
  });
  const tls = dialEndpoint('wss://chat.example', '10.1.2.3');
  assert.equal(tls.port, 443);
  assert.equal(tls.host, 'chat.example', 'Host keeps the name');
  assert.equal(tls.servername, 'chat.example', 'so does SNI');
  assert.equal(tls.connectTo, '10.1.2.3');
  assert.equal(tls.basePath, '');
  const v6 = dialEndpoint('wss://[::1]:8443');
  assert.equal(v6.connectTo, '::1', 'no brackets to connect to');
  assert.equal(v6.host, '[::1]:8443', 'brackets in Host');
  assert.equal(v6.servername, '', 'no SNI for an address');
});

test('requestTarget: the URL path, then the client path; the URL query before the client query', () => {
  const plain = dialEndpoint('ws://b:9000');
  assert.equal(requestTarget(plain, '/chat?x=1'), '/chat?x=1');
  const based = dialEndpoint('ws://b:9000/base?v=2');
  assert.equal(requestTarget(based, '/chat?x=1'), '/base/chat?v=2&x=1');
  assert.equal(requestTarget(based, '/chat'), '/base/chat?v=2');
  assert.equal(requestTarget(based, '/'), '/base/?v=2');
});

test('clientTarget: dot segments resolved within the path, "//" kept, unsafe characters percent-encoded', () => {
  assert.equal(clientTarget('/a/../../../admin?x=1'), '/admin?x=1');
  assert.equal(clientTarget('/a/%2e%2E/b'), '/b');
  assert.equal(clientTarget('//evil.example/x'), '//evil.example/x');
  assert.equal(clientTarget('/a"b<c>'), '/a%22b%3Cc%3E');
  assert.equal(clientTarget('/room?'), '/room', 'an empty query is no query');
});
