import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vite';

// The admin UI is a static bundle the control plane serves at /ui/ (src/ui/routes.ts). Preact's JSX is
// compiled by Vite's own transformer, so no framework plugin (and no Babel) is needed: the build stays fast.
export default defineConfig({
  root: fileURLToPath(new URL('.', import.meta.url)),
  base: '/ui/',
  logLevel: 'warn',
  oxc: { jsx: { runtime: 'automatic', importSource: 'preact' } },
  // `npm run ui:dev`: live reload on :5173, the API from a control plane started with `npm start`.
  server: { proxy: { '/v1': 'http://127.0.0.1:8080', '/docs': 'http://127.0.0.1:8080' } },
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    target: 'es2022',
    // chart.js is most of the bundle; one file of ~250 kB is fine for an operator console.
    chunkSizeWarningLimit: 600,
    // The bundle holds preact and chart.js (MIT), minified without their notices: their licenses go
    // beside it, into the image with ui/dist (scripts/check-licenses.ts, UI_BUNDLED).
    license: { fileName: 'third-party-licenses.md' },
  },
});
