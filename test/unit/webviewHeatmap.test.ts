/** Heatmap geometry and colours (webview/heatmap.ts pure helpers). */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { cellSize, hitTest, rampColor } from '../../webview/heatmap';

describe('heatmap helpers', () => {
  it('maps points to cells and rejects the label margins and outside points', () => {
    // Row labels take 28 px, column labels 16 px.
    assert.deepEqual(hitTest(28, 16, 10, 4, 2), { row: 0, col: 0 });
    assert.deepEqual(hitTest(28 + 15, 16 + 35, 10, 4, 2), { row: 3, col: 1 });
    assert.equal(hitTest(27, 20, 10, 4, 2), null);
    assert.equal(hitTest(40, 15, 10, 4, 2), null);
    assert.equal(hitTest(28 + 20, 20, 10, 4, 2), null);
    assert.equal(hitTest(30, 16 + 40, 10, 4, 2), null);
  });

  it('sizes cells so both maps fit side by side, within bounds', () => {
    // 32 layers × (8 KV + 32 query) heads in a 480 px card: one size for both maps.
    const c = cellSize(32, 40, 2, 480);
    assert.ok(2 * (28 + 4) + 24 + 40 * c <= 480, `cell ${c}`);
    assert.equal(cellSize(4, 6, 2, 2000), 44);
    assert.equal(cellSize(1024, 4096, 2, 300), 5);
  });

  it('ramps from dark blue to yellow and clamps', () => {
    assert.deepEqual(rampColor(0), [68, 1, 84]);
    assert.deepEqual(rampColor(1), [253, 231, 37]);
    assert.deepEqual(rampColor(-3), rampColor(0));
    assert.deepEqual(rampColor(9), rampColor(1));
    // Brightness grows along the ramp.
    const lum = (t: number) => rampColor(t).reduce((a, b) => a + b, 0);
    for (let t = 0.1; t <= 1; t += 0.1) assert.ok(lum(t) > lum(t - 0.1));
  });
});
