import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { extname, join, normalize, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import type { Config } from '../config.js';
import { AppError, notFound } from '../errors.js';
import { requireOperator } from '../http/auth.js';
import { ErrorBody, NoQuery } from '../http/schemas.js';

/** Where `vite build` (npm run ui:build) writes the admin UI; the same path from src/ and from dist/. */
export const UI_DIST = fileURLToPath(new URL('../../ui/dist/', import.meta.url));

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.json': 'application/json; charset=utf-8',
  '.woff2': 'font/woff2',
  '.map': 'application/json; charset=utf-8',
};

// The UI talks to this origin only and runs no inline script: an injected string in an audit row or an
// alert message cannot become code, and the page cannot be framed.
const CSP = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "object-src 'none'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join('; ');

const SECURITY_HEADERS = {
  'content-security-policy': CSP,
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  'referrer-policy': 'no-referrer',
};

/** The Unleash UI for the operators' link: UNLEASH_URL without its /api suffix (the embedded server's URL at start). */
export function unleashUiUrl(config: Pick<Config, 'unleashUrl'>): string | null {
  if (!config.unleashUrl) return null;
  try {
    const url = new URL(config.unleashUrl);
    url.pathname = url.pathname.replace(/\/api\/?$/, '') || '/';
    url.search = '';
    url.hash = '';
    return url.toString().replace(/\/$/, '');
  } catch {
    return null;
  }
}

const UiSettings = Type.Object({
  unleash_ui_url: Type.Union([Type.String(), Type.Null()], { description: 'Base URL of the Unleash UI where operators toggle flags; null when unknown.' }),
  unleash_environment: Type.String({ description: 'The Unleash environment this control plane reads: toggle flags in this one.' }),
});

export interface UiRoutesOptions {
  /** Directory of the built UI. Default: ui/dist of this package. */
  root?: string;
}

/**
 * Serves the built admin UI at /ui/ (static files; the UI uses only the public admin API) and the one
 * setting the UI needs that the rest of the API does not give: where the Unleash UI is.
 */
export const uiRoutes: FastifyPluginAsyncTypebox<UiRoutesOptions> = async (app, opts) => {
  const root = normalize(opts.root ?? UI_DIST);
  const { config, auth } = app.ctx;

  app.get(
    '/v1/ui/settings',
    {
      onRequest: requireOperator(auth, 'viewer'),
      schema: { operationId: 'getUiSettings', tags: ['ui'], summary: 'Settings the admin UI shows: the Unleash UI address and environment', querystring: NoQuery, response: { 200: UiSettings, 400: ErrorBody, 401: ErrorBody, 403: ErrorBody } },
    },
    async () => ({ unleash_ui_url: unleashUiUrl(config), unleash_environment: config.unleashEnvironment }),
  );

  app.get('/', { schema: { hide: true } }, async (_req, reply) => reply.redirect('/ui/'));
  app.get('/ui', { schema: { hide: true } }, async (_req, reply) => reply.redirect('/ui/'));

  app.get(
    '/ui/*',
    { schema: { hide: true, params: Type.Object({ '*': Type.String({ maxLength: 500 }) }, { additionalProperties: false }) } },
    async (req, reply) => {
      const rel = req.params['*'] || 'index.html';
      const file = normalize(join(root, rel));
      // No way out of the UI directory, whatever the encoding of the path.
      if (!file.startsWith(root.endsWith(sep) ? root : root + sep)) throw notFound('file');
      const info = await stat(file).catch(() => null);
      if (!info?.isFile()) {
        if (rel === 'index.html') throw new AppError('SERVICE_UNAVAILABLE', 'The admin UI is not built: run `npm run ui:build` (npm start and npm test do it).', undefined, { retryAfterS: false });
        throw notFound('file');
      }
      // Vite puts a content hash in every asset name: those never change; index.html must always be fresh.
      const immutable = rel.startsWith('assets/');
      return reply
        .headers(SECURITY_HEADERS)
        .header('cache-control', immutable ? 'public, max-age=31536000, immutable' : 'no-cache')
        .type(TYPES[extname(file)] ?? 'application/octet-stream')
        .send(createReadStream(file));
    },
  );
};
