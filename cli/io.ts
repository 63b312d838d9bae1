/**
 * File input and output for the `lockstep` command: NDJSON traces and JSON files. Node-only.
 * @module
 */
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';

/** A failure the user can fix (bad path, bad file): printed without a stack, exit status 2. */
export class CliError extends Error {
  override readonly name = 'CliError';
  constructor(
    message: string,
    readonly exitCode: number = 2,
  ) {
    super(message);
  }
}

/** Read a trace file as its lines (header first); a final newline does not make an empty line. */
export function readTraceLines(file: string): readonly string[] {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    throw new CliError(`cannot read trace ${file}: ${describe(error)}`);
  }
  const lines = text.split('\n');
  if (lines.length > 0 && lines[lines.length - 1] === '') lines.pop();
  if (lines.length === 0) throw new CliError(`trace ${file} is empty`);
  return lines;
}

/** The exact bytes a trace file holds: each line followed by a newline. */
export function traceText(lines: readonly string[]): string {
  return lines.length === 0 ? '' : `${lines.join('\n')}\n`;
}

/** Write trace lines to `file` (creating its folder). */
export function writeTraceLines(file: string, lines: readonly string[]): void {
  writeTextFile(file, traceText(lines));
}

/** Write `text` to `file`, creating its folder. */
export function writeTextFile(file: string, text: string): void {
  try {
    mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
    writeFileSync(file, text);
  } catch (error) {
    throw new CliError(`cannot write ${file}: ${describe(error)}`);
  }
}

/** Read and parse a JSON file. */
export function readJsonFile(file: string): unknown {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    throw new CliError(`cannot read ${file}: ${describe(error)}`);
  }
  try {
    return JSON.parse(text) as unknown;
  } catch (error) {
    throw new CliError(`${file} is not valid JSON: ${describe(error)}`);
  }
}

/** SHA-256 of a trace's bytes, hex. */
export function traceDigest(lines: readonly string[]): string {
  return createHash('sha256').update(traceText(lines)).digest('hex');
}

/** An error's message, whatever was thrown. */
export function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** Quote a command-line argument for a POSIX shell when it needs it. */
export function shellQuote(argument: string): string {
  return /^[\w@%+=:,./-]+$/.test(argument) ? argument : `'${argument.replaceAll("'", "'\\''")}'`;
}
