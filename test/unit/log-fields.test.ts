import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';
import { PINO_KEYS, REDACT_PATHS } from '../../src/log.js';

// Every log call in src/ (pino's info, warn ..., and child bindings), read from the source: a field named
// like one pino writes itself is a second key of that name in the JSON line, and a field named like a
// redaction path is printed as [redacted], so an id under such a name is lost to the operator.

const METHODS = new Set(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'child']);
const REDACTED_TOP = new Set(REDACT_PATHS.filter((p) => /^\w+$/.test(p)));
const REDACTED_NESTED = new Set(REDACT_PATHS.filter((p) => p.startsWith('*.')).map((p) => p.slice(2)));

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const path = join(dir, e.name);
    if (e.isDirectory()) return sourceFiles(path);
    return /\.tsx?$/.test(e.name) ? [path] : [];
  });
}

interface Field {
  where: string;
  name: string;
  nested: boolean;
}

/** The object a log call gets: a literal, or a const in the same file initialised with one. */
function logObject(arg: ts.Expression | undefined, consts: Map<string, ts.ObjectLiteralExpression>): ts.ObjectLiteralExpression | undefined {
  if (!arg) return undefined;
  if (ts.isObjectLiteralExpression(arg)) return arg;
  if (ts.isIdentifier(arg)) return consts.get(arg.text);
  return undefined;
}

function logFields(file: string): Field[] {
  const sf = ts.createSourceFile(file, readFileSync(file, 'utf8'), ts.ScriptTarget.Latest, true);
  const consts = new Map<string, ts.ObjectLiteralExpression>();
  const fields: Field[] = [];
  const where = (n: ts.Node) => `${file}:${sf.getLineAndCharacterOfPosition(n.getStart(sf)).line + 1}`;
  const nameOf = (p: ts.ObjectLiteralElementLike) => (p.name && (ts.isIdentifier(p.name) || ts.isStringLiteral(p.name)) ? p.name.text : undefined);
  const visit = (n: ts.Node) => {
    if (ts.isVariableDeclaration(n) && ts.isIdentifier(n.name) && n.initializer && ts.isObjectLiteralExpression(n.initializer)) consts.set(n.name.text, n.initializer);
    if (ts.isCallExpression(n) && ts.isPropertyAccessExpression(n.expression) && METHODS.has(n.expression.name.text)) {
      const obj = logObject(n.arguments[0], consts);
      for (const p of obj?.properties ?? []) {
        const name = nameOf(p);
        if (name !== undefined) fields.push({ where: where(p), name, nested: false });
        if (ts.isPropertyAssignment(p) && ts.isObjectLiteralExpression(p.initializer)) {
          for (const q of p.initializer.properties) {
            const inner = nameOf(q);
            if (inner !== undefined) fields.push({ where: where(q), name: inner, nested: true });
          }
        }
      }
    }
    ts.forEachChild(n, visit);
  };
  visit(sf);
  return fields;
}

const fields = sourceFiles('src').flatMap(logFields);

describe('log fields in src/', () => {
  it('finds the log calls (the check reads something)', () => {
    expect(fields.filter((f) => f.name === 'err').length).toBeGreaterThan(20);
    expect(fields.some((f) => f.name === 'decision_id' && f.where.startsWith('src/decisions/routes.ts'))).toBe(true);
  });

  it("no field repeats a key pino writes on every line (level, time, pid, hostname, msg)", () => {
    const clashes = fields.filter((f) => !f.nested && (PINO_KEYS as readonly string[]).includes(f.name));
    expect(clashes.map((f) => `${f.where} ${f.name}`)).toEqual([]);
  });

  it('no field is named like a redaction path (those names are for secrets; an id under one is hidden): use <name>_id', () => {
    const hidden = fields.filter((f) => (f.nested ? REDACTED_NESTED : REDACTED_TOP).has(f.name) || (!f.nested && REDACTED_NESTED.has(f.name)));
    expect(hidden.map((f) => `${f.where} ${f.name}`)).toEqual([]);
  });
});
