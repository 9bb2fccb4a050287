import { existsSync, readFileSync } from 'node:fs';
import { dirname, relative, resolve } from 'node:path';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';

// `killswitch kill` is the break-glass path: before the CLI sends its request it must load only what the
// kill commands need. What a run loads is fixed by main.ts's static imports (dynamic import() in an
// action loads only when that command runs); this walks them as the runtime does. With
// verbatimModuleSyntax only `import type` / `export type` are erased; `import { type X }` still loads X's module.

function staticImports(file: string): string[] {
  const source = ts.createSourceFile(file, readFileSync(file, 'utf8'), ts.ScriptTarget.ES2022);
  const out: string[] = [];
  for (const st of source.statements) {
    if (ts.isImportDeclaration(st) && !st.importClause?.isTypeOnly && ts.isStringLiteral(st.moduleSpecifier)) out.push(st.moduleSpecifier.text);
    if (ts.isExportDeclaration(st) && !st.isTypeOnly && st.moduleSpecifier && ts.isStringLiteral(st.moduleSpecifier)) out.push(st.moduleSpecifier.text);
  }
  return out;
}

/** Every source file and package the entry loads before its first line runs. */
function loadedBy(entry: string): { files: string[]; packages: string[] } {
  const files = new Set<string>();
  const packages = new Set<string>();
  const visit = (file: string) => {
    if (files.has(file)) return;
    files.add(file);
    for (const spec of staticImports(file)) {
      if (spec.startsWith('node:')) continue;
      if (!spec.startsWith('.')) {
        packages.add(spec.startsWith('@') ? spec.split('/').slice(0, 2).join('/') : spec.split('/')[0]!);
        continue;
      }
      const target = resolve(dirname(file), spec.replace(/\.js$/, '.ts'));
      if (existsSync(target)) visit(target);
    }
  };
  visit(resolve(entry));
  return { files: [...files].map((f) => relative(process.cwd(), f)).sort(), packages: [...packages].sort() };
}

describe('CLI start-up: what `killswitch kill` loads', () => {
  it('src/cli/main.ts loads commander and light modules only, not the control plane', () => {
    const { files, packages } = loadedBy('src/cli/main.ts');
    expect(packages).toEqual(['commander']);
    for (const heavy of ['src/server.ts', 'src/app.ts', 'src/cluster.ts', 'src/flags/cli.ts', 'src/audit/commands.ts', 'src/cli/operators.ts', 'src/cli/scan/scan.ts', 'src/policy/index.ts', 'src/cli/audit-search.ts']) {
      expect(files).not.toContain(heavy);
    }
    expect(files).toContain('src/cli/kill.ts');
  });
});
