import { strict as assert } from 'node:assert';
import { describe, test } from 'node:test';
import { float32ToBf16Bits, float32ToF16Bits } from '../../src/core/checkpoint/dtypes';
import { DataType, GraphBuilder, dataTypeCode, floatAttr, graphAttr } from '../../src/core/compute/onnx';
import { BACKEND_CHOICES, createSession, listedBackends, parseBackendChoice, probeBackend, Tensor, usableBackends } from '../../src/core/compute/session';
import { FactoredKeysError } from '../../src/core/errors';

async function run(model: Uint8Array, feeds: Record<string, Tensor>): Promise<Record<string, Tensor>> {
  const s = await createSession(model, { backend: 'cpu' });
  try {
    return await s.run(feeds);
  } finally {
    await s.dispose();
  }
}

describe('ONNX graph builder', () => {
  test('Gemm with float attributes, fp16/bf16 initializers cast in-graph, int64 shapes, Reshape/Transpose/Concat/Slice/Gather/Softmax', async () => {
    const g = new GraphBuilder('mix');
    const x = g.input('x', 'float32', ['n', 3]);
    const w16 = g.initializer('w16', 'float16', [3, 2], float32ToF16Bits(Float32Array.from([1, 2, 3, 4, 5, 6])));
    const wbf = g.initializer('wbf', 'bfloat16', [3, 2], float32ToBf16Bits(Float32Array.from([0.5, -1, 2, 0.25, -3, 1])));
    const a = g.op('Cast', [w16], { to: DataType.FLOAT });
    const b = g.op('Cast', [wbf], { to: dataTypeCode('float32') });
    // alpha = 1 must stay a FLOAT attribute (plain 1 would be inferred as INT)
    const y1 = g.op('Gemm', [x, a], { alpha: floatAttr(1), beta: 0.5 });
    const y2 = g.op('MatMul', [x, b]);
    const cat = g.op('Concat', [y1, y2], { axis: 1 }); // [n, 4]
    const flat = g.op('Reshape', [cat, g.int64s([-1])]);
    const sliced = g.op('Slice', [flat, g.int64s([1]), g.int64s([3]), g.int64s([0])]);
    g.output(sliced, 'float32', [2]);
    g.output(g.op('Transpose', [cat], { perm: [1, 0] }), 'float32');
    g.output(g.op('Gather', [cat, g.constant('int64', [2], [3, 0])], { axis: 1 }), 'float32');
    g.output(g.op('Softmax', [cat], { axis: -1 }, { outputs: ['soft'] }), 'float32');
    const out = await run(g.toModel(), { x: new Tensor('float32', Float32Array.from([1, 0, 0, 0, 1, 1]), [2, 3]) });
    const names = Object.keys(out);
    // row 0 = [1,0,0]: Gemm -> [1,2], MatMul with bf16 weights -> [0.5,-1]; row 1 = [0,1,1]: [8,10], [-1,1.25]
    assert.deepEqual([...(out[names[0]].data as Float32Array)], [2, 0.5]);
    assert.deepEqual(out[names[1]].dims, [4, 2]);
    assert.deepEqual([...(out[names[1]].data as Float32Array)], [1, 8, 2, 10, 0.5, -1, -1, 1.25]);
    assert.deepEqual([...(out[names[2]].data as Float32Array)], [-1, 1, 1.25, 8]);
    const soft = out.soft.data as Float32Array;
    assert.ok(Math.abs(soft[0] + soft[1] + soft[2] + soft[3] - 1) < 1e-6);
  });

  test('int64 and negative attributes, multi-output ops, and subgraph attributes (If)', async () => {
    const g = new GraphBuilder('ctl');
    const x = g.input('x', 'float32', [4]);
    const flag = g.input('flag', 'bool', []);
    const [lo, hi] = g.opMulti('Split', [x, g.int64s([1, 3])], { axis: -1 }, { outputCount: 2 });
    const then = new GraphBuilder('then');
    then.output(then.op('Identity', [hi]), 'float32');
    const other = new GraphBuilder('else');
    other.output(other.op('Neg', [hi]), 'float32');
    g.output(g.op('If', [flag], { then_branch: graphAttr(then), else_branch: graphAttr(other) }), 'float32');
    g.output(lo, 'float32', [1]);
    const m = g.toModel();
    const t = await run(m, { x: new Tensor('float32', Float32Array.from([1, 2, 3, 4]), [4]), flag: new Tensor('bool', Uint8Array.from([1]), []) });
    const f = await run(m, { x: new Tensor('float32', Float32Array.from([1, 2, 3, 4]), [4]), flag: new Tensor('bool', Uint8Array.from([0]), []) });
    const key = Object.keys(t)[0];
    assert.deepEqual([...(t[key].data as Float32Array)], [2, 3, 4]);
    assert.deepEqual([...(f[key].data as Float32Array)], [-2, -3, -4]);
  });

  test('misuse is reported: duplicate names, no outputs, wrong initializer size', () => {
    const g = new GraphBuilder('bad');
    g.input('x', 'float32', [1]);
    assert.throws(() => g.input('x', 'float32', [1]), /used twice/);
    assert.throws(() => g.toModel(), /no outputs/);
    const h = new GraphBuilder('bad2');
    assert.throws(() => h.initializer('w', 'float32', [2, 2], Float32Array.from([1, 2, 3])), /12 bytes of data for float32\[2, 2\]/);
    const k = new GraphBuilder('bad3');
    assert.throws(() => k.constant('float16', [1], [1]), /raw bits/);
  });
});

describe('compute sessions', () => {
  test('backend names are validated with a one-line error', () => {
    for (const b of BACKEND_CHOICES) assert.equal(parseBackendChoice(b), b);
    assert.throws(() => parseBackendChoice('tpu'), (e: unknown) => e instanceof FactoredKeysError && /must be one of auto, cpu, webgpu, cuda, dml, coreml/.test(e.message));
  });

  test('cpu is always listed and usable; auto ends with cpu', async () => {
    assert.ok(listedBackends().has('cpu'));
    const cpu = await probeBackend('cpu');
    assert.equal(cpu.usable, true);
    // the probe's own time, which auto's trial adds to a GPU provider's start-up
    assert.ok(typeof cpu.startMs === 'number' && cpu.startMs >= 0 && cpu.startMs < 60_000, String(cpu.startMs));
    const usable = await usableBackends();
    assert.equal(usable[usable.length - 1], 'cpu');
  });

  test('an unusable provider falls back to the CPU with a reason instead of failing', async () => {
    const g = new GraphBuilder('sq');
    const x = g.input('x', 'float32', [2]);
    g.output(g.op('Mul', [x, x]), 'float32', [2]);
    for (const backend of ['cuda', 'dml', 'coreml'] as const) {
      const probe = await probeBackend(backend);
      if (probe.usable) continue; // a machine that really has it
      const s = await createSession(g.toModel(), { backend });
      try {
        assert.equal(s.backend, 'cpu');
        assert.match(s.fallbackReason ?? '', new RegExp(`^${backend} is not usable here \\(.+\\); using cpu$`));
        const out = await s.run({ x: new Tensor('float32', Float32Array.from([3, -2]), [2]) });
        assert.deepEqual([...(out[s.outputNames[0]].data as Float32Array)], [9, 4]);
      } finally {
        await s.dispose();
      }
    }
  });
});
