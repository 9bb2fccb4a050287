import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { renderApiDoc } from '../../src/docs/api.js';

// docs/api.md shows each field's constraints from the OpenAPI document: a client that breaks one gets a
// 400, so every bound a request can break is written next to the field.

describe('docs/api.md field constraints', () => {
  const spec = {
    paths: {
      '/v1/things': {
        post: {
          tags: ['things'],
          summary: 'Make a thing',
          parameters: [{ name: 'limit', in: 'query', schema: { type: 'integer', minimum: 1, maximum: 500 } }],
          requestBody: {
            content: {
              'application/json': {
                schema: {
                  type: 'object',
                  required: ['reason'],
                  properties: {
                    reason: { type: 'string', minLength: 3, maxLength: 1000, description: 'Why.' },
                    servers: { type: 'array', items: { type: 'string' }, minItems: 1, maxItems: 50 },
                    note: { anyOf: [{ type: 'string', minLength: 2 }, { type: 'null' }] },
                  },
                },
              },
            },
          },
          responses: { '200': { description: 'ok' } },
        },
      },
    },
  };

  it('renders minLength (it was dropped), maxLength, minItems, maxItems, minimum and maximum', () => {
    const doc = renderApiDoc(spec);
    expect(doc).toContain('| `reason` | `string` | yes | Why. (min length 3, max length 1000) |');
    expect(doc).toContain('(min items 1, max items 50)');
    expect(doc).toContain('(min 1, max 500)');
    expect(doc).toContain('(min length 2)');
  });

  it("the approval routes' reason shows its minimum of 3 characters", () => {
    const doc = readFileSync('docs/api.md', 'utf8');
    const approve = doc.slice(doc.indexOf('### `POST /v1/approvals/{id}/approve`'));
    expect(approve).toMatch(/\| `reason` \|[^\n]*min length 3/);
  });
});

describe('docs/api.md tells what the OpenAPI document declares beyond JSON bodies', () => {
  const spec = {
    paths: {
      '/v1/export': {
        get: {
          tags: ['things'],
          parameters: [{ name: 'Last-Event-ID', in: 'header', description: 'Where to resume.', schema: { type: 'string' } }],
          responses: {
            '200': {
              headers: { 'X-Truncated': { schema: { type: 'string' } } },
              content: { 'application/json': { schema: { type: 'object', properties: { rows: { type: 'array' } } } }, 'text/csv': { schema: { type: 'string' } } },
            },
            '503': { headers: { 'Retry-After': { schema: { type: 'integer' } } }, content: { 'application/json': { schema: { type: 'object' } } } },
          },
        },
      },
      '/v1/hook': {
        post: {
          tags: ['things'],
          security: [{ unleashWebhookSecret: [] }],
          requestBody: { required: false, content: { 'application/json': { schema: { type: 'object', properties: { reason: { type: 'string' } } } } } },
          responses: { '200': { content: { 'application/json': { schema: { type: 'object', properties: { ok: { type: 'boolean' } } } } } } },
        },
      },
    },
  };
  const doc = renderApiDoc(spec);

  it("a success's other media types and headers; an error's headers are told once, in the introduction", () => {
    expect(doc).toContain('Responses: `200` {rows} or `text/csv` (header `X-Truncated`), `503`.');
  });

  it('a header parameter is listed with the query and path ones', () => {
    expect(doc).toContain('| `Last-Event-ID` | header | `string` |  | Where to resume. |');
  });

  it("the webhook's secret, and an optional body", () => {
    expect(doc).toContain('Auth: the Unleash webhook secret as the whole `Authorization` value, without `Bearer`');
    expect(doc).toContain('Request body (optional: none, without a Content-Type, is `{}`):');
  });
});
