import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

const USAGE = `Usage: baton <command> [options]

Commands:
  sidecar --config FILE   run the sidecar (config: YAML file plus BATON_* environment variables)
  operator [--flag V]     run the operator (flags and BATON_OPERATOR_* variables: docs/operator.md)
  demo [--port N]         a sidecar in front of two local echo backends, with a talking client
                          (default port 8080; 0 picks a free one)

Options:
  -h, --help              this text
  -v, --version           the version
`;

export async function main(argv: string[]): Promise<void> {
  const [command, ...rest] = argv;
  switch (command) {
    case 'sidecar': {
      const { values } = parseArgs({ args: rest, options: { config: { type: 'string', short: 'c' } } });
      const { runSidecar } = await import('../sidecar/main.js');
      return runSidecar(values.config);
    }
    case 'operator': {
      const { runOperator } = await import('../operator/main.js');
      return runOperator(operatorFlags(rest));
    }
    case 'demo': {
      const { values } = parseArgs({ args: rest, options: { port: { type: 'string', default: '8080' } } });
      const port = Number(values.port);
      if (!Number.isInteger(port) || port < 0 || port > 65535) {
        process.stderr.write(`baton demo: --port "${values.port}" is not a port number (0-65535)\n`);
        process.exit(2);
      }
      const { runDemo } = await import('../sidecar/demo.js');
      return runDemo(port);
    }
    case '-v':
    case '--version': {
      const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
      process.stdout.write(`${pkg.version}\n`);
      return;
    }
    case undefined:
    case '-h':
    case '--help':
      process.stdout.write(USAGE);
      return;
    default:
      process.stderr.write(`baton: unknown command "${command}"\n\n${USAGE}`);
      process.exit(2);
  }
}

/** `--name value` and `--name=value` pairs; the operator checks the names against its table. */
function operatorFlags(args: string[]): Record<string, string | undefined> {
  const { tokens } = parseArgs({ args, strict: false, tokens: true });
  const flags: Record<string, string | undefined> = {};
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i]!;
    if (t.kind !== 'option') continue;
    let value = t.value;
    const next = tokens[i + 1];
    if (value === undefined && next?.kind === 'positional') {
      value = next.value;
      i++;
    }
    flags[t.name] = value ?? 'true';
  }
  return flags;
}
