import { readFile } from 'node:fs/promises';
import { findNodeAtLocation, getNodeValue, type Node, type ParseError, parseTree, printParseErrorCode } from 'jsonc-parser';
import type { FileKind, InputError } from './schema.js';

// Reads one client config or package.json and returns what it declares, keeping the line and column
// of every server and of every value inside it, so a finding points at the exact `env` key or `args`
// item. VS Code and Cursor accept comments and trailing commas (JSONC); Claude Desktop, `.mcp.json`,
// `mcp.json` and package.json are strict JSON, as their readers are.

export type JsonPath = (string | number)[];

export interface SourcePosition {
  line: number;
  column: number;
}

export interface ConfiguredServer {
  origin: 'config';
  name: string;
  file: string;
  fileKind: FileKind;
  position: SourcePosition;
  /** Position of a value inside this server's entry (falls back to the entry itself). */
  locate: (path: JsonPath) => SourcePosition;
  type: string | undefined;
  command: string | undefined;
  args: string[];
  url: string | undefined;
  env: Record<string, string>;
  headers: Record<string, string>;
  /** Where `shell: true` is set: on the entry or in its spawn `options`; undefined when not. */
  shellAt: JsonPath | undefined;
}

export const DEPENDENCY_TYPES = ['dependencies', 'devDependencies', 'optionalDependencies', 'peerDependencies'] as const;
export type DependencyType = (typeof DEPENDENCY_TYPES)[number];

export interface PackageDependency {
  origin: 'package';
  name: string;
  version: string;
  dependencyType: DependencyType;
  file: string;
  fileKind: 'package_json';
  position: SourcePosition;
}

export type ParsedFile = { file: string; kind: FileKind; servers: ConfiguredServer[]; packages: PackageDependency[] };
export type ParseResult = { ok: true; parsed: ParsedFile } | { ok: false; errors: InputError[] };

const MAX_FILE_BYTES = 5 * 1024 * 1024;

/** `@modelcontextprotocol/*`, and names like `mcp-server-x`, `x-mcp`, `x-mcp-server`, `@scope/mcp`. */
export function isMcpPackage(name: string): boolean {
  if (name.startsWith('@modelcontextprotocol/')) return true;
  const bare = name.startsWith('@') ? name.slice(name.indexOf('/') + 1) : name;
  return /^mcp$|^mcp[-_.]|[-_.]mcp$|[-_.]mcp[-_.]/i.test(bare);
}

class LineIndex {
  private readonly starts: number[] = [0];
  constructor(text: string) {
    for (let i = 0; i < text.length; i++) if (text.charCodeAt(i) === 10) this.starts.push(i + 1);
  }
  at(offset: number): SourcePosition {
    let lo = 0;
    let hi = this.starts.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if ((this.starts[mid] as number) <= offset) lo = mid;
      else hi = mid - 1;
    }
    return { line: lo + 1, column: offset - (this.starts[lo] as number) + 1 };
  }
}

function typeName(node: Node): string {
  return node.type === 'array' ? 'a list' : node.type === 'object' ? 'an object' : node.type === 'null' ? 'null' : `a ${node.type}`;
}

/** The offset of a property's key when the node is a property value, else the node's own. */
function keyOffset(node: Node): number {
  const parent = node.parent;
  if (parent?.type === 'property' && parent.children?.[1] === node) return parent.children[0]?.offset ?? node.offset;
  return node.offset;
}

class FileReader {
  readonly errors: InputError[] = [];
  private readonly lines: LineIndex;
  constructor(
    readonly file: string,
    text: string,
  ) {
    this.lines = new LineIndex(text);
  }
  pos(offset: number): SourcePosition {
    return this.lines.at(offset);
  }
  error(offset: number, message: string): void {
    this.errors.push({ file: this.file, ...this.pos(offset), message });
  }
  expect(node: Node, type: Node['type'], what: string): boolean {
    if (node.type === type) return true;
    this.error(node.offset, `${what} must be ${type === 'array' ? 'a list' : type === 'object' ? 'an object' : `a ${type}`}, not ${typeName(node)}`);
    return false;
  }
}

function propertiesOf(node: Node): { key: string; keyNode: Node; value: Node }[] {
  const out: { key: string; keyNode: Node; value: Node }[] = [];
  for (const p of node.children ?? []) {
    const [k, v] = p.children ?? [];
    if (k && v && typeof k.value === 'string') out.push({ key: k.value, keyNode: k, value: v });
  }
  return out;
}

function stringMap(r: FileReader, node: Node | undefined, what: string): Record<string, string> {
  const out: Record<string, string> = {};
  if (!node || !r.expect(node, 'object', what)) return out;
  for (const { key, value } of propertiesOf(node)) {
    if (value.type === 'string' || value.type === 'number' || value.type === 'boolean') out[key] = String(value.value);
    else if (value.type !== 'null') r.error(value.offset, `${what}.${key} must be text, not ${typeName(value)}`);
  }
  return out;
}

function readServer(r: FileReader, kind: FileKind, name: string, entry: Node): ConfiguredServer | undefined {
  const where = `server "${name}"`;
  if (!r.expect(entry, 'object', where)) return undefined;
  const field = (key: string) => findNodeAtLocation(entry, [key]);
  const text = (key: string): string | undefined => {
    const n = field(key);
    if (!n || n.type === 'null') return undefined;
    if (n.type !== 'string') {
      r.error(n.offset, `${where}: "${key}" must be text, not ${typeName(n)}`);
      return undefined;
    }
    return n.value as string;
  };
  const args: string[] = [];
  const argsNode = field('args');
  if (argsNode && argsNode.type !== 'null' && r.expect(argsNode, 'array', `${where}: "args"`)) {
    for (const a of argsNode.children ?? []) {
      if (a.type === 'string' || a.type === 'number') args.push(String(a.value));
      else r.error(a.offset, `${where}: every item of "args" must be text, not ${typeName(a)}`);
    }
  }
  const optionsShell = findNodeAtLocation(entry, ['options', 'shell']);
  const shellNode = field('shell');
  const isTrue = (n: Node | undefined) => n !== undefined && (n.value === true || n.value === 'true' || (n.type === 'string' && n.value !== '' && n.value !== 'false'));
  const envNode = field('env');
  const headersNode = field('headers');
  return {
    origin: 'config',
    name,
    file: r.file,
    fileKind: kind,
    position: r.pos(keyOffset(entry)),
    locate: (path) => {
      const n = path.length ? findNodeAtLocation(entry, path) : entry;
      return r.pos(n ? keyOffset(n) : keyOffset(entry));
    },
    type: text('type') ?? text('transport'),
    command: text('command'),
    args,
    url: text('url') ?? text('serverUrl'),
    env: envNode && envNode.type !== 'null' ? stringMap(r, envNode, `${where}: "env"`) : {},
    headers: headersNode && headersNode.type !== 'null' ? stringMap(r, headersNode, `${where}: "headers"`) : {},
    shellAt: isTrue(shellNode) ? ['shell'] : isTrue(optionsShell) ? ['options', 'shell'] : undefined,
  };
}

/** Which key holds the servers: Claude Desktop, Cursor and `.mcp.json` use mcpServers, VS Code servers. */
function serverKeys(kind: FileKind): string[] {
  if (kind === 'vscode') return ['servers'];
  if (kind === 'mcp_json') return ['mcpServers', 'servers'];
  return ['mcpServers'];
}

/** Parses file text. Never throws: syntax and shape problems come back as errors with line:column. */
export function parseConfigText(text: string, file: string, kind: FileKind): ParseResult {
  const r = new FileReader(file, text);
  const jsonc = kind === 'vscode' || kind === 'cursor';
  const syntax: ParseError[] = [];
  const root = parseTree(text, syntax, { disallowComments: !jsonc, allowTrailingComma: jsonc, allowEmptyContent: false });
  for (const e of syntax) r.error(e.offset, `invalid ${jsonc ? 'JSON (with comments)' : 'JSON'}: ${describeParseError(printParseErrorCode(e.error))}`);
  if (r.errors.length > 0 || !root) {
    if (r.errors.length === 0) r.error(0, 'the file is empty');
    return { ok: false, errors: r.errors };
  }
  if (!r.expect(root, 'object', 'the file')) return { ok: false, errors: r.errors };

  const parsed: ParsedFile = { file, kind, servers: [], packages: [] };
  if (kind === 'package_json') {
    for (const dependencyType of DEPENDENCY_TYPES) {
      const deps = findNodeAtLocation(root, [dependencyType]);
      if (deps?.type !== 'object') continue;
      for (const { key, keyNode, value } of propertiesOf(deps)) {
        if (!isMcpPackage(key)) continue;
        const version = value.type === 'string' ? (value.value as string) : String(getNodeValue(value));
        parsed.packages.push({ origin: 'package', name: key, version, dependencyType, file, fileKind: 'package_json', position: r.pos(keyNode.offset) });
      }
    }
    return { ok: true, parsed };
  }
  for (const key of serverKeys(kind)) {
    const container = findNodeAtLocation(root, [key]);
    if (!container || container.type === 'null') continue;
    if (!r.expect(container, 'object', `"${key}"`)) continue;
    for (const { key: name, value } of propertiesOf(container)) {
      const server = readServer(r, kind, name, value);
      if (server) parsed.servers.push(server);
    }
  }
  if (r.errors.length > 0) return { ok: false, errors: r.errors };
  return { ok: true, parsed };
}

function describeParseError(code: string): string {
  const words: Record<string, string> = {
    InvalidSymbol: 'unexpected character',
    InvalidNumberFormat: 'invalid number',
    PropertyNameExpected: 'a property name in double quotes was expected',
    ValueExpected: 'a value was expected',
    ColonExpected: '":" was expected',
    CommaExpected: '"," was expected',
    CloseBraceExpected: '"}" was expected',
    CloseBracketExpected: '"]" was expected',
    EndOfFileExpected: 'unexpected content after the end',
    InvalidCommentToken: 'comments are not allowed in this file',
    UnexpectedEndOfComment: 'unterminated comment',
    UnexpectedEndOfString: 'unterminated string',
    UnexpectedEndOfNumber: 'unterminated number',
    InvalidUnicode: 'invalid unicode escape',
    InvalidEscapeCharacter: 'invalid escape character',
    InvalidCharacter: 'invalid character in a string',
  };
  return words[code] ?? code;
}

/** Reads and parses one file. Unreadable files come back as one error at 1:1. */
export async function parseConfigFile(file: string, kind: FileKind, display = file): Promise<ParseResult> {
  let bytes: Buffer;
  try {
    bytes = await readFile(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const reason = code === 'ENOENT' ? 'file not found' : code === 'EACCES' ? 'permission denied' : code === 'EISDIR' ? 'is a directory' : (err as Error).message;
    return { ok: false, errors: [{ file: display, line: 1, column: 1, message: `cannot read the file: ${reason}` }] };
  }
  if (bytes.length > MAX_FILE_BYTES) {
    return { ok: false, errors: [{ file: display, line: 1, column: 1, message: `the file is larger than ${MAX_FILE_BYTES} bytes; not read` }] };
  }
  // Windows editors write a UTF-8 byte order mark, which JSON parsers reject; a space keeps columns right.
  let text = bytes.toString('utf8');
  if (text.charCodeAt(0) === 0xfeff) text = ` ${text.slice(1)}`;
  return parseConfigText(text, display, kind);
}
