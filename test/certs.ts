// Test PKI generated at test time with the openssl CLI (EC P-256, valid for one day):
// a test CA; server certs; a client cert; and an unrelated second CA with its own client cert.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface KeyPair {
  certFile: string;
  keyFile: string;
  cert: Buffer;
  key: Buffer;
}

export interface TestPki {
  dir: string;
  /** The test CA (caFile / ca). */
  ca: KeyPair;
  /** Server cert for DNS:backend.test and IP:127.0.0.1, signed by the test CA. */
  server: KeyPair;
  /** Server cert for DNS:backend.test only, signed by the test CA. */
  serverNameOnly: KeyPair;
  /** Client cert CN=baton-sidecar, signed by the test CA. */
  client: KeyPair;
  /** An unrelated CA, and a client cert (CN=intruder) it signed. */
  otherCa: KeyPair;
  otherClient: KeyPair;
  cleanup(): void;
}

const OPENSSL = '/usr/bin/openssl';

export function makePki(): TestPki {
  const dir = mkdtempSync(join(tmpdir(), 'baton-pki-'));
  // A config with no default extensions: every extension a cert has is given by -addext.
  const cnf = join(dir, 'openssl.cnf');
  writeFileSync(cnf, '[req]\ndistinguished_name = dn\n[dn]\n');
  const run = (args: string[]) => execFileSync(OPENSSL, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  const load = (name: string): KeyPair => {
    const certFile = join(dir, `${name}.pem`);
    const keyFile = join(dir, `${name}.key`);
    return { certFile, keyFile, cert: readFileSync(certFile), key: readFileSync(keyFile) };
  };
  const common = ['-config', cnf, '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '1', '-sha256'];
  const makeCa = (name: string, cn: string): KeyPair => {
    run(['req', '-x509', ...common, '-keyout', join(dir, `${name}.key`), '-out', join(dir, `${name}.pem`), '-subj', `/CN=${cn}`,
      '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
    return load(name);
  };
  const makeLeaf = (name: string, cn: string, issuer: KeyPair, ext: string[]): KeyPair => {
    run(['req', '-x509', ...common, '-CA', issuer.certFile, '-CAkey', issuer.keyFile, '-keyout', join(dir, `${name}.key`), '-out', join(dir, `${name}.pem`),
      '-subj', `/CN=${cn}`, '-addext', 'basicConstraints=critical,CA:FALSE', '-addext', 'keyUsage=critical,digitalSignature',
      ...ext.flatMap((e) => ['-addext', e])]);
    return load(name);
  };
  try {
    const ca = makeCa('ca', 'Baton Test CA');
    const otherCa = makeCa('other-ca', 'Unrelated Test CA');
    return {
      dir,
      ca,
      otherCa,
      server: makeLeaf('server', 'backend.test', ca, ['subjectAltName=DNS:backend.test,IP:127.0.0.1', 'extendedKeyUsage=serverAuth']),
      serverNameOnly: makeLeaf('server-name-only', 'backend.test', ca, ['subjectAltName=DNS:backend.test', 'extendedKeyUsage=serverAuth']),
      client: makeLeaf('client', 'baton-sidecar', ca, ['extendedKeyUsage=clientAuth']),
      otherClient: makeLeaf('other-client', 'intruder', otherCa, ['extendedKeyUsage=clientAuth']),
      cleanup: () => rmSync(dir, { recursive: true, force: true }),
    };
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    const stderr = (err as { stderr?: Buffer }).stderr?.toString() ?? '';
    throw new Error(`openssl failed: ${(err as Error).message}\n${stderr}`);
  }
}
