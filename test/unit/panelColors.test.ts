/** Chart colours of the panel (webview/colors.ts): opaque, and readable on light and dark cards. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { composite, contrastRatio, parseCssColor, readableSeriesColor, stackedBackground, toHex } from '../../webview/colors';

const WHITE = { r: 255, g: 255, b: 255, a: 1 };
const opaque = (text: string) => composite(parseCssColor(text)!, WHITE);

describe('panel chart colours', () => {
  it('parses the colour forms VS Code themes use', () => {
    assert.deepEqual(parseCssColor('#EA5C0055'), { r: 234, g: 92, b: 0, a: 0x55 / 255 });
    assert.deepEqual(parseCssColor('#fff'), { r: 255, g: 255, b: 255, a: 1 });
    assert.deepEqual(parseCssColor('#0008'), { r: 0, g: 0, b: 0, a: 0x88 / 255 });
    assert.deepEqual(parseCssColor('rgba(10, 20, 30, 0.5)'), { r: 10, g: 20, b: 30, a: 0.5 });
    assert.deepEqual(parseCssColor('rgb(10 20 30 / 50%)'), { r: 10, g: 20, b: 30, a: 0.5 });
    for (const bad of ['', 'orange', 'var(--x)', '#12345', 'rgb(1, 2)', 'rgb(a, b, c)']) assert.equal(parseCssColor(bad), null, bad);
  });

  it('computes WCAG contrast', () => {
    assert.equal(contrastRatio(WHITE, { r: 0, g: 0, b: 0, a: 1 }), 21);
    assert.equal(contrastRatio(WHITE, WHITE), 1);
    // #767676 on white is the classic 4.54:1 grey.
    assert.ok(Math.abs(contrastRatio(opaque('#767676'), WHITE) - 4.54) < 0.01);
  });

  it('makes the translucent find-match orange of Light Modern readable on a light card', () => {
    const card = '#f8f8f8';
    const translucent = '#ea5c0055';
    // What the plots drew before: the translucent orange over the card, far below 3:1.
    assert.ok(contrastRatio(composite(parseCssColor(translucent)!, opaque(card)), opaque(card)) < 1.6);
    const fixed = readableSeriesColor(translucent, card, '#3b3b3b');
    assert.ok(contrastRatio(opaque(fixed), opaque(card)) >= 3, fixed);
    // Still an orange: red well above green, green above blue.
    const c = opaque(fixed);
    assert.ok(c.r > c.g + 60 && c.g > c.b, fixed);
  });

  it('darkens a faint colour toward the foreground only as far as needed', () => {
    // charts.yellow of the dark palette on white: too faint, mixed toward a dark foreground.
    const fixed = readableSeriesColor('#cca700', '#ffffff', '#202020');
    const ratio = contrastRatio(opaque(fixed), WHITE);
    assert.ok(ratio >= 3 && ratio < 3.6, `${fixed}: ${ratio}`);
  });

  it('leaves colours that already read well alone (dark theme, high contrast)', () => {
    assert.equal(readableSeriesColor('#3794FF', '#202020', '#cccccc'), '#3794ff');
    assert.equal(readableSeriesColor('#d18616', '#000000', '#ffffff'), '#d18616');
    assert.equal(readableSeriesColor('var(--nope)', '#fff', '#000'), 'var(--nope)');
  });

  it('stacks translucent backgrounds', () => {
    assert.equal(stackedBackground('#ffffff80', '#000000'), '#808080');
    assert.equal(stackedBackground('transparent', '#1f1f1f'), '#1f1f1f');
    assert.equal(toHex(opaque('#abc')), '#aabbcc');
  });
});
