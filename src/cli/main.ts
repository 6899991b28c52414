#!/usr/bin/env node
/**
 * The `celery-sign` command (package.json `bin`).
 *
 *   celery-sign COMMAND [options]    celery-sign COMMAND --help
 *
 * @internal
 * @module
 */
import { benchCmd } from './bench.js';
import { checkConfigCmd } from './check-config.js';
import { CliError, EXIT, EXIT_CODES_HELP, oneLine, parse, type Command, type Io } from './common.js';
import { id } from './id.js';
import { certgen, keygen } from './keys.js';
import { inspectCmd, signCmd, verifyCmd } from './payload.js';
import { workerCmd } from './worker.js';

/** The commands, in the order `--help` lists them. */
export const COMMANDS: Record<string, Command> = {
  keygen,
  certgen,
  id,
  sign: signCmd,
  verify: verifyCmd,
  inspect: inspectCmd,
  'check-config': checkConfigCmd,
  bench: benchCmd,
  worker: workerCmd,
};

function version(): string {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  return (require('../../package.json') as { version: string }).version;
}

function topHelp(): string {
  const width = Math.max(...Object.keys(COMMANDS).map((n) => n.length));
  return `Usage: celery-sign COMMAND [options]

Keys, certificates and payloads of Celery's auth serializer (message signing),
the throughput demo, and a Node worker.

Commands:
${Object.entries(COMMANDS)
  .map(([n, c]) => `  ${n.padEnd(width)}  ${c.summary}`)
  .join('\n')}

Run celery-sign COMMAND --help for a command's options.

Options:
  -h, --help     this text
  -v, --version  the version

${EXIT_CODES_HELP}`;
}

/** Runs the CLI with `argv` (without node and the script); resolves to the exit status. */
export async function main(argv: string[], io: Io): Promise<number> {
  const [name, ...rest] = argv;
  try {
    if (name === undefined || name === '-h' || name === '--help' || name === 'help') {
      if (name === 'help' && rest[0] && COMMANDS[rest[0]]) {
        io.stdout.write(COMMANDS[rest[0]]!.help + '\n');
        return EXIT.OK;
      }
      (name === undefined ? io.stderr : io.stdout).write(topHelp() + '\n');
      return name === undefined ? EXIT.USAGE : EXIT.OK;
    }
    if (name === '-v' || name === '--version') {
      io.stdout.write(version() + '\n');
      return EXIT.OK;
    }
    const cmd = Object.hasOwn(COMMANDS, name) ? COMMANDS[name] : undefined;
    if (cmd === undefined) throw new CliError(`unknown command ${JSON.stringify(name)}: run celery-sign --help`, EXIT.USAGE);
    if (rest.includes('-h') || rest.includes('--help')) {
      io.stdout.write(cmd.help + '\n\n' + EXIT_CODES_HELP + '\n');
      return EXIT.OK;
    }
    return await cmd.run(parse(cmd, rest), io);
  } catch (e) {
    const code = e instanceof CliError ? e.exitCode : EXIT.RUNTIME;
    const where = name && Object.hasOwn(COMMANDS, name) ? ` ${name}` : '';
    io.stderr.write(`celery-sign${where}: ${oneLine(e)}\n`);
    return code;
  }
}

if (require.main === module) {
  const io: Io = { stdout: process.stdout, stderr: process.stderr, stdin: process.stdin, env: process.env };
  main(process.argv.slice(2), io).then(
    (code) => {
      process.exitCode = code;
    },
    (e: unknown) => {
      process.stderr.write(`celery-sign: ${oneLine(e)}\n`);
      process.exitCode = EXIT.RUNTIME;
    },
  );
}
