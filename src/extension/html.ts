/**
 * The panel's HTML document, without VS Code types so it can be unit-tested: a strict CSP with
 * a per-load nonce, no inline code or styles, and resources only from the webview's own origin.
 */
import { randomBytes } from 'node:crypto';

/** A random nonce for the CSP's script-src (base64 alphabet without symbols). */
export function makeNonce(): string {
  return randomBytes(18).toString('base64').replace(/[^A-Za-z0-9]/g, '');
}

/** The CSP: nothing by default; scripts only with the nonce; styles, fonts, images only from `cspSource`. */
export function contentSecurityPolicy(cspSource: string, nonce: string): string {
  return [`default-src 'none'`, `img-src ${cspSource} data:`, `style-src ${cspSource}`, `font-src ${cspSource}`, `script-src 'nonce-${nonce}'`].join('; ');
}

/** The panel document; `asset(file)` maps a file in dist/ to its webview URI. */
export function panelDocument(cspSource: string, asset: (file: string) => string, title: string, nonce = makeNonce()): string {
  const esc = (s: string) => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="UTF-8">
<meta http-equiv="Content-Security-Policy" content="${contentSecurityPolicy(cspSource, nonce)}">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<link rel="stylesheet" href="${esc(asset('webview.css'))}">
<title>${esc(title)}</title>
</head>
<body>
<div id="app"></div>
<script nonce="${nonce}" src="${esc(asset('webview.js'))}"></script>
</body>
</html>`;
}
