import { type Dispatcher, fetch } from 'undici';

// A small client for the parts of the Unleash 7 admin API that flags sync, the tests and the kill-switch
// benchmark use. Everything is in the `default` project (Unleash OSS has only that one).

export const UNLEASH_PROJECT = 'default';

export interface UnleashConstraint {
  contextName: string;
  operator: string;
  values?: string[];
  value?: string;
  inverted?: boolean;
  caseInsensitive?: boolean;
}

export interface UnleashStrategy {
  id?: string;
  name: string;
  title?: string | null;
  parameters?: Record<string, string>;
  constraints?: UnleashConstraint[];
  segments?: number[];
  disabled?: boolean | null;
  sortOrder?: number;
}

export interface UnleashFeature {
  name: string;
  description?: string | null;
  type: string;
  archived?: boolean;
  environments: Array<{ name: string; enabled: boolean; strategies: UnleashStrategy[] }>;
}

export interface UnleashContextField {
  name: string;
  description?: string;
  legalValues?: Array<{ value: string; description?: string }>;
  stickiness?: boolean;
}

export interface UnleashAddon {
  id: number;
  provider: string;
  description?: string | null;
  enabled: boolean;
  parameters: Record<string, string>;
  events: string[];
  projects?: string[];
  environments?: string[];
}

export class UnleashAdminError extends Error {
  constructor(
    readonly status: number,
    readonly method: string,
    readonly path: string,
    body: string,
  ) {
    super(`Unleash admin API ${method} ${path} answered ${status}: ${body.slice(0, 300)}`);
    this.name = 'UnleashAdminError';
  }
}

/** Admin API client. `apiUrl` is the Unleash API base (…/api), the same URL the SDK uses. */
export class UnleashAdmin {
  private readonly base: string;

  constructor(
    apiUrl: string,
    private readonly token: string,
    private readonly timeoutMs = 10_000,
    /** HTTPS_PROXY / HTTP_PROXY with NO_PROXY (src/http/outbound.ts); undefined: direct. */
    private readonly dispatcher?: Dispatcher,
  ) {
    this.base = apiUrl.replace(/\/+$/, '');
  }

  private async request<T>(method: string, path: string, body?: unknown, okStatuses: number[] = []): Promise<T | undefined> {
    const res = await fetch(`${this.base}${path}`, {
      method,
      headers: { authorization: this.token, accept: 'application/json', ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      signal: AbortSignal.timeout(this.timeoutMs),
      ...(this.dispatcher ? { dispatcher: this.dispatcher } : {}),
    });
    const text = await res.text();
    if (okStatuses.includes(res.status)) return undefined;
    if (!res.ok) throw new UnleashAdminError(res.status, method, path, text);
    return text ? (JSON.parse(text) as T) : undefined;
  }

  private feature(name: string): string {
    return `/admin/projects/${UNLEASH_PROJECT}/features/${encodeURIComponent(name)}`;
  }

  private env(name: string, environment: string): string {
    return `${this.feature(name)}/environments/${encodeURIComponent(environment)}`;
  }

  /** The flag, or undefined when it does not exist (or is archived). */
  async getFeature(name: string): Promise<UnleashFeature | undefined> {
    return this.request<UnleashFeature>('GET', this.feature(name), undefined, [404]);
  }

  async createFeature(f: { name: string; description: string; type: string }): Promise<void> {
    await this.request('POST', `/admin/projects/${UNLEASH_PROJECT}/features`, { name: f.name, description: f.description, type: f.type, impressionData: false });
  }

  async updateFeature(name: string, patch: { description?: string; type?: string }): Promise<void> {
    const ops = Object.entries(patch).map(([k, v]) => ({ op: 'replace', path: `/${k}`, value: v }));
    if (ops.length) await this.request('PATCH', this.feature(name), ops);
  }

  /** Names of archived flags (an archived name cannot be created again without reviving it). */
  async archivedFeatureNames(): Promise<Set<string>> {
    const res = await this.request<{ features: Array<{ name: string }> }>('GET', `/admin/search/features?project=IS:${UNLEASH_PROJECT}&archived=IS:true&limit=1000`);
    return new Set((res?.features ?? []).map((f) => f.name));
  }

  /**
   * Whether Unleash's event log holds any event for a flag of this name (created, archived, deleted…):
   * a flag that is missing now but has events existed before. The log keeps the events of deleted flags.
   */
  async hasFeatureEvents(name: string): Promise<boolean> {
    const res = await this.request<{ events?: unknown[]; total?: number }>('GET', `/admin/search/events?feature=${encodeURIComponent(`IS:${name}`)}&limit=1`);
    if (!res || !Array.isArray(res.events)) throw new Error(`Unleash event search for ${name} answered without an event list`);
    return res.events.length > 0 || (res.total ?? 0) > 0;
  }

  async archiveFeature(name: string): Promise<void> {
    await this.request('DELETE', this.feature(name));
  }

  async reviveFeature(name: string): Promise<void> {
    await this.request('POST', `/admin/projects/${UNLEASH_PROJECT}/revive`, { features: [name] });
  }

  async deleteArchivedFeature(name: string): Promise<void> {
    await this.request('POST', `/admin/projects/${UNLEASH_PROJECT}/delete`, { features: [name] });
  }

  async setEnabled(name: string, environment: string, enabled: boolean): Promise<void> {
    await this.request('POST', `${this.env(name, environment)}/${enabled ? 'on' : 'off'}`);
  }

  async getStrategies(name: string, environment: string): Promise<UnleashStrategy[]> {
    return (await this.request<UnleashStrategy[]>('GET', `${this.env(name, environment)}/strategies`)) ?? [];
  }

  async addStrategy(name: string, environment: string, s: UnleashStrategy): Promise<UnleashStrategy> {
    return (await this.request<UnleashStrategy>('POST', `${this.env(name, environment)}/strategies`, s))!;
  }

  async updateStrategy(name: string, environment: string, id: string, s: UnleashStrategy): Promise<void> {
    const { id: _id, sortOrder: _sortOrder, ...body } = s;
    await this.request('PUT', `${this.env(name, environment)}/strategies/${encodeURIComponent(id)}`, body);
  }

  async deleteStrategy(name: string, environment: string, id: string): Promise<void> {
    await this.request('DELETE', `${this.env(name, environment)}/strategies/${encodeURIComponent(id)}`);
  }

  async listContextFields(): Promise<UnleashContextField[]> {
    return (await this.request<UnleashContextField[]>('GET', '/admin/context')) ?? [];
  }

  async createContextField(f: UnleashContextField): Promise<void> {
    await this.request('POST', '/admin/context', f);
  }

  async updateContextField(f: UnleashContextField): Promise<void> {
    await this.request('PUT', `/admin/context/${encodeURIComponent(f.name)}`, f);
  }

  async listAddons(): Promise<UnleashAddon[]> {
    return (await this.request<{ addons: UnleashAddon[] }>('GET', '/admin/addons'))?.addons ?? [];
  }

  async createAddon(a: Omit<UnleashAddon, 'id'>): Promise<UnleashAddon> {
    return (await this.request<UnleashAddon>('POST', '/admin/addons', a))!;
  }

  async updateAddon(id: number, a: Omit<UnleashAddon, 'id'>): Promise<void> {
    await this.request('PUT', `/admin/addons/${id}`, a);
  }

  async deleteAddon(id: number): Promise<void> {
    await this.request('DELETE', `/admin/addons/${id}`);
  }
}
