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
