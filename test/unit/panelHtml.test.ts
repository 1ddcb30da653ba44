/** The panel document's security properties (src/extension/html.ts). */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { contentSecurityPolicy, makeNonce, panelDocument } from '../../src/extension/html';

const source = 'https://file+.vscode-resource.vscode-cdn.net';
const asset = (f: string) => `${source}/ext/dist/${f}`;

describe('panel HTML', () => {
  it('has a strict CSP: nothing by default, scripts only by nonce, no inline or eval', () => {
    const csp = contentSecurityPolicy(source, 'abc123');
    assert.match(csp, /^default-src 'none';/);
    assert.match(csp, /script-src 'nonce-abc123'$/);
    assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval|\*/);
    assert.match(csp, new RegExp(`style-src ${source.replace(/[.+]/g, '\\$&')};`));
  });

  it('loads only the bundled script (with the nonce) and stylesheet, no inline code', () => {
    const html = panelDocument(source, asset, 'mistral <bytes>', 'N0nce');
    const scripts = [...html.matchAll(/<script([^>]*)>([\s\S]*?)<\/script>/g)];
    assert.equal(scripts.length, 1);
    assert.match(scripts[0][1], /nonce="N0nce"/);
    assert.match(scripts[0][1], /src="https:\/\/file\+\.vscode-resource\.vscode-cdn\.net\/ext\/dist\/webview\.js"/);
    assert.equal(scripts[0][2].trim(), '', 'no inline script body');
    assert.doesNotMatch(html, /\sstyle="|<style|\son[a-z]+="/i);
    // Every URL points at the webview resource origin.
    for (const [, url] of html.matchAll(/(?:src|href)="([^"]+)"/g)) assert.ok(url.startsWith(source), url);
    assert.match(html, /<title>mistral &#60;bytes&#62;<\/title>/);
  });

  it('makes a fresh nonce each time', () => {
    const a = makeNonce();
    assert.match(a, /^[A-Za-z0-9]{16,}$/);
    assert.notEqual(a, makeNonce());
  });
});
