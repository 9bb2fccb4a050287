import type { ScannedServer, ScanOutput } from './schema.js';

// The human table and seed 002's "MCP Security Report" (markdown), both rendered from the same
// ScanOutput as --json, so no format can show something another one hides (or leak what the output
// itself has masked).

const MAX_CELL = 60;

function clip(text: string, max = MAX_CELL): string {
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

function commandOf(s: ScannedServer): string {
  if (s.origin === 'package') return s.package ? `${s.package.name}@${s.package.version} (${s.package.dependency_type})` : s.name;
  if (s.url !== null && s.transport !== 'stdio') return s.url;
  return [s.command ?? '', ...s.args].join(' ').trim() || '(none)';
}

function inventory(out: ScanOutput): string {
  const p = out.summary.packages;
  return `${out.summary.servers} in client configs, ${p} MCP package ${p === 1 ? 'dependency' : 'dependencies'}`;
}

function table(rows: string[][]): string {
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length))) ?? [];
  return rows.map((r) => r.map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i] ?? 0))).join('  ')).join('\n');
}

function approvedText(s: ScannedServer): string {
  if (s.approved === null) return '-';
  return s.approved ? 'yes' : 'no';
}

export function renderTable(out: ScanOutput): string {
  const lines: string[] = [];
  const where = out.summary.files === 1 ? '1 file' : `${out.summary.files} files`;
  lines.push(`MCP servers: ${inventory(out)} (${where})`);
  if (out.servers.length > 0) {
    lines.push('');
    const rows = [['SERVER', 'SOURCE', 'TRANSPORT', 'KIND', 'RISK', 'APPROVED', 'COMMAND / URL']];
    for (const s of out.servers) {
      rows.push([clip(s.name, 32), `${s.file}:${s.line}:${s.column}`, s.transport ?? 'package', s.read_only ? `${s.kind} (ro)` : s.kind, s.risk.toUpperCase(), approvedText(s), clip(commandOf(s))]);
    }
    lines.push(table(rows));
  }
  lines.push('');
  if (out.findings.length === 0) lines.push('Findings: none');
  else {
    lines.push(`Findings (${out.findings.length}):`);
    for (const f of out.findings) {
      lines.push(`  ${f.severity.toUpperCase().padEnd(8)}  ${f.type.padEnd(20)}  ${f.file}:${f.line}:${f.column}  ${f.server}: ${f.message}`);
      lines.push(`  ${''.padEnd(8)}  ${''.padEnd(20)}  evidence: ${clip(f.evidence, 120)}`);
    }
  }
  if (out.errors.length > 0) {
    lines.push('');
    lines.push(`Errors: ${out.errors.length} file${out.errors.length === 1 ? '' : 's'} could not be read or parsed (listed on stderr)`);
  }
  const r = out.summary.risk;
  const f = out.summary.findings;
  lines.push('');
  lines.push(`Risk: critical ${r.critical}, high ${r.high}, medium ${r.medium}, low ${r.low}`);
  lines.push(`Findings: critical ${f.critical}, high ${f.high}, medium ${f.medium}, low ${f.low}`);
  lines.push(out.policy ? `Policy: ${out.policy.file} (${out.summary.unapproved} not approved)` : 'Policy: none read (approval not checked)');
  lines.push(`Exit code ${out.summary.exit_code} (fail on: ${out.fail_on})`);
  return `${lines.join('\n')}\n`;
}

function md(text: string): string {
  return text.replaceAll('\\', '\\\\').replaceAll('|', '\\|').replaceAll('\n', ' ');
}

function listOr(items: readonly string[], none: string): string {
  return items.length > 0 ? items.join(', ') : none;
}

/** Seed 002's reporting template, followed by the details it summarises. */
export function renderMarkdownReport(out: ScanOutput): string {
  const date = out.generated_at.slice(0, 10);
  const r = out.summary.risk;
  const violations = out.findings.filter((f) => f.type === 'unapproved_server');
  const vulnerabilities = out.findings.filter((f) => f.type !== 'unapproved_server');
  const withFindings = new Set(out.findings.map((f) => f.server_id));
  const review = out.servers.filter((s) => s.risk === 'critical' || s.risk === 'high' || withFindings.has(s.id)).map((s) => `${s.name} (${s.file})`);
  const unapproved = out.servers.filter((s) => s.approved === false).map((s) => `${s.name} (${s.file})`);

  const lines = [
    `## MCP Security Report - ${date}`,
    '',
    '### Inventory',
    `- Total MCP Servers: ${out.servers.length} (${inventory(out)})`,
    `- Critical Risk: ${r.critical} | High Risk: ${r.high} | Medium Risk: ${r.medium} | Low Risk: ${r.low}`,
    '',
    '### Findings',
    `- New MCP servers detected: ${out.summary.unapproved ?? 'not checked (no policy file)'}`,
    `- Policy violations: ${out.policy ? violations.length : 'not checked (no policy file)'}`,
    `- Security vulnerabilities: ${vulnerabilities.length}`,
    '',
    '### Actions',
    `- Servers requiring review: ${md(listOr(review, 'none'))}`,
    '- Remediation in progress: none recorded (a scan cannot know; track remediation in your issue tracker)',
    `- Policy updates needed: ${out.policy ? md(unapproved.length > 0 ? `approve or remove ${unapproved.join(', ')}` : 'none') : 'write a policy file (see docs/policy.md)'}`,
    '',
    '### Servers',
    '',
    '| Server | Source | Transport | Kind | Risk | Approved | Command / URL |',
    '|---|---|---|---|---|---|---|',
    ...out.servers.map(
      (s) =>
        `| ${md(s.name)} | ${md(`${s.file}:${s.line}`)} | ${s.transport ?? 'package'} | ${s.read_only ? `${s.kind} (read-only)` : s.kind} | ${s.risk.toUpperCase()} | ${approvedText(s)} | ${md(clip(commandOf(s), 100))} |`,
    ),
    '',
    '### Finding details',
    '',
  ];
  if (out.findings.length === 0) lines.push('No findings.');
  else {
    lines.push('| Severity | Type | Server | Location | Finding | Evidence |', '|---|---|---|---|---|---|');
    for (const f of out.findings) {
      lines.push(`| ${f.severity.toUpperCase()} | ${f.type} | ${md(f.server)} | ${md(`${f.file}:${f.line}:${f.column}`)} | ${md(f.message)} | ${md(clip(f.evidence, 100))} |`);
    }
  }
  if (out.errors.length > 0) {
    lines.push('', '### Files that could not be read', '');
    for (const e of out.errors) lines.push(`- ${md(`${e.file}:${e.line}:${e.column}`)}: ${md(e.message)}`);
  }
  lines.push('', `_Generated by killswitch scan at ${out.generated_at}${out.policy ? ` against policy ${md(out.policy.file)} (sha256 ${out.policy.sha256.slice(0, 12)})` : ''}._`);
  return `${lines.join('\n')}\n`;
}
