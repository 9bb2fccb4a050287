import { describe, expect, it } from 'vitest';
import type { ConstraintView, StrategyView } from '../../src/flags/service.js';
import { strategiesFor } from '../../src/flags/withheld.js';

const ALPHA_TOKEN = '0190a1b2-0000-7000-8000-00000000000a';
const BETA_TOKEN = '0190a1b2-0000-7000-8000-00000000000b';

function constraint(contextName: string, values: string[]): ConstraintView {
  return { contextName, operator: 'NOT_IN', values, valuesTotal: values.length, value: null, inverted: false, caseInsensitive: false };
}

function strategy(constraints: ConstraintView[], parameters: Record<string, string> = {}): StrategyView {
  return { name: 'flexibleRollout', parameters, constraints, segments: [{ id: 7, constraints: [constraint('userId', [BETA_TOKEN])] }] };
}

const owners = new Map([
  [ALPHA_TOKEN, 'alpha'],
  [BETA_TOKEN, 'beta'],
]);

describe('strategiesFor (GET /v1/flags for a key limited to projects)', () => {
  it('a key without a project limit sees every value, nothing withheld', () => {
    const [s] = strategiesFor([strategy([constraint('userId', [BETA_TOKEN]), constraint('projectId', ['beta'])], { userIds: `${BETA_TOKEN},${ALPHA_TOKEN}` })], null, null);
    expect(s?.constraints.map((c) => [c.values, c.valuesWithheld])).toEqual([
      [[BETA_TOKEN], 0],
      [['beta'], 0],
    ]);
    expect(s?.parameters['userIds']).toBe(`${BETA_TOKEN},${ALPHA_TOKEN}`);
    expect(s?.parametersWithheld).toBe(0);
  });

  it("withholds another project's ids in constraints, segments and a userWithId strategy's userIds", () => {
    const [s] = strategiesFor([strategy([constraint('userId', [BETA_TOKEN, ALPHA_TOKEN]), constraint('tool', ['beta_tool'])], { userIds: `${BETA_TOKEN}, ${ALPHA_TOKEN}`, rollout: '100' })], ['alpha'], owners);
    expect(s?.constraints.map((c) => [c.contextName, c.values, c.valuesWithheld, c.valuesTotal])).toEqual([
      ['userId', [ALPHA_TOKEN], 1, 2],
      ['tool', ['beta_tool'], 0, 1],
    ]);
    expect(s?.segments).toEqual([{ id: 7, constraints: [expect.objectContaining({ values: [], valuesWithheld: 1 })] }]);
    expect(s?.parameters).toEqual({ userIds: ALPHA_TOKEN, rollout: '100' });
    expect(s?.parametersWithheld).toBe(1);
  });

  it('Postgres unable to say whose ids they are (owners null): every token and session id is withheld, projects still compared', () => {
    const [s] = strategiesFor([strategy([constraint('userId', [ALPHA_TOKEN]), constraint('sessionId', [BETA_TOKEN]), constraint('projectId', ['alpha', 'beta'])])], ['alpha'], null);
    expect(s?.constraints.map((c) => [c.values, c.valuesWithheld])).toEqual([
      [[], 1],
      [[], 1],
      [['alpha'], 1],
    ]);
  });
});
