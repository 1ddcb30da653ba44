/**
 * The O(n³) part of the per-head eigensolve (Householder tridiagonalisation of the Gram
 * matrix's upper triangle) as a small WebAssembly module with 128-bit SIMD (f64x2), assembled
 * here from its instructions at load time: no binary is checked in and no toolchain is needed.
 *
 * Same arithmetic as `EigenWorkspace`'s JavaScript loop (float64, the same Householder
 * vectors), only the inner loops over a row run two lanes at a time without bounds checks:
 * about 3x faster per head. Callers fall back to the JavaScript loop when WebAssembly SIMD is
 * unavailable ({@link createWasmTridiagonalizer} returns undefined).
 */

// --- a minimal WebAssembly binary writer -----------------------------------------------------

function uleb(n: number): number[] {
  const out: number[] = [];
  do {
    let b = n & 0x7f;
    n >>>= 7;
    if (n !== 0) b |= 0x80;
    out.push(b);
  } while (n !== 0);
  return out;
}

function sleb(n: number): number[] {
  const out: number[] = [];
  for (;;) {
    const b = n & 0x7f;
    n >>= 7;
    if ((n === 0 && (b & 0x40) === 0) || (n === -1 && (b & 0x40) !== 0)) {
      out.push(b);
      return out;
    }
    out.push(b | 0x80);
  }
}

const vec = (items: number[][]): number[] => [...uleb(items.length), ...items.flat()];
const section = (id: number, body: number[]): number[] => [id, ...uleb(body.length), ...body];

type Code = number[];
const I32 = 0x7f;
const F64 = 0x7c;
const V128 = 0x7b;

// instructions (operands follow the opcode)
const get = (l: number): Code => [0x20, ...uleb(l)];
const set = (l: number): Code => [0x21, ...uleb(l)];
const i32 = (x: number): Code => [0x41, ...sleb(x)];
const f64 = (x: number): Code => {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setFloat64(0, x, true);
  return [0x44, ...b];
};
const simd = (op: number, ...imm: number[]): Code => [0xfd, ...uleb(op), ...imm];
const MEM64 = [3, 0]; // memarg: align 2^3, offset 0
const op = {
  add: 0x6a, sub: 0x6b, mul: 0x6c, and: 0x71, shl: 0x74, eqz: 0x45, geS: 0x4e, ltS: 0x48,
  fEq: 0x61, fGt: 0x64, fAdd: 0xa0, fSub: 0xa1, fMul: 0xa2, fDiv: 0xa3, fSqrt: 0x9f, fNeg: 0x9a,
  select: 0x1b, end: 0x0b,
};
const loadF = (addr: Code): Code => [...addr, 0x2b, ...MEM64];
const storeF = (addr: Code, value: Code): Code => [...addr, ...value, 0x39, ...MEM64];
const loadV = (addr: Code): Code => [...addr, ...simd(0x00, ...[4, 0])];
const storeV = (addr: Code, value: Code): Code => [...addr, ...value, ...simd(0x0b, ...[4, 0])];
const splat = (x: Code): Code => [...x, ...simd(0x14)];
const vAdd = (a: Code, b: Code): Code => [...a, ...b, ...simd(0xf0)];
const vSub = (a: Code, b: Code): Code => [...a, ...b, ...simd(0xf1)];
const vMul = (a: Code, b: Code): Code => [...a, ...b, ...simd(0xf2)];
const lane = (x: Code, l: number): Code => [...x, ...simd(0x21, l)];
const bin = (a: Code, b: Code, o: number): Code => [...a, ...b, o];
/** `for (var = from; var < to; var += step) body` */
const forLoop = (v: number, from: Code, to: Code, step: number, body: Code): Code => [
  ...from, ...set(v),
  0x02, 0x40, 0x03, 0x40,
  ...bin(get(v), to, op.geS), 0x0d, 1, // br_if exit
  ...body,
  ...bin(get(v), i32(step), op.add), ...set(v),
  0x0c, 0, // br loop
  op.end, op.end,
];
const ifThen = (cond: Code, body: Code): Code => [...cond, 0x04, 0x40, ...body, op.end];

// --- the tridiagonalisation kernel --------------------------------------------------------------

// params: a d e v p n (byte addresses of float64 arrays; n)
const A = 0, E = 2, V = 3, P = 4, N = 5;
// i32 locals
const K = 6, R0 = 7, J = 8, I = 9, RI = 10, K1 = 11;
// f64 locals
const TAIL2 = 12, X0 = 13, ALPHA = 14, BETA = 15, VI = 16, WI = 17, S = 18, VP = 19, HALF = 20, AIJ = 21;
// v128 locals
const ACC = 22, VIS = 23, WIS = 24, AV = 25;

const addr = (base: number, index: Code): Code => bin(get(base), bin(index, i32(3), op.shl), op.add);
const at = (base: number, index: number): Code => addr(base, get(index));

function tridiagonalBody(): Code {
  const nMinus = (x: number): Code => bin(get(N), i32(x), op.sub);
  const rowAddr = (row: number, into: number): Code => [...bin(get(A), bin(bin(get(row), get(N), op.mul), i32(3), op.shl), op.add), ...set(into)];
  // matvec over one row i: s += a_ij v_j, p_j += a_ij v_i for j in (i, n)
  const matvecRow: Code = [
    ...rowAddr(I, RI),
    ...loadF(at(V, I)), ...set(VI),
    ...bin(loadF(addr(RI, get(I))), get(VI), op.fMul), ...set(S),
    ...bin(get(I), i32(1), op.add), ...set(J),
    ...ifThen(bin(bin(get(N), get(J), op.sub), i32(1), op.and), [
      ...loadF(addr(RI, get(J))), ...set(AIJ),
      ...bin(get(S), bin(get(AIJ), loadF(at(V, J)), op.fMul), op.fAdd), ...set(S),
      ...storeF(at(P, J), bin(loadF(at(P, J)), bin(get(AIJ), get(VI), op.fMul), op.fAdd)),
      ...bin(get(J), i32(1), op.add), ...set(J),
    ]),
    ...splat(f64(0)), ...set(ACC),
    ...splat(get(VI)), ...set(VIS),
    ...forLoop(J, get(J), get(N), 2, [
      ...loadV(addr(RI, get(J))), ...set(AV),
      ...vAdd(get(ACC), vMul(get(AV), loadV(at(V, J)))), ...set(ACC),
      ...storeV(at(P, J), vAdd(loadV(at(P, J)), vMul(get(AV), get(VIS)))),
    ]),
    ...bin(get(S), bin(lane(get(ACC), 0), lane(get(ACC), 1), op.fAdd), op.fAdd), ...set(S),
    ...storeF(at(P, I), bin(loadF(at(P, I)), get(S), op.fAdd)),
  ];
  // rank-2 update of one row: a_ij -= v_i w_j + w_i v_j for j in [i, n)
  const updateRow: Code = [
    ...rowAddr(I, RI),
    ...loadF(at(V, I)), ...set(VI),
    ...loadF(at(P, I)), ...set(WI),
    ...get(I), ...set(J),
    ...ifThen(bin(bin(get(N), get(J), op.sub), i32(1), op.and), [
      ...storeF(addr(RI, get(J)), bin(loadF(addr(RI, get(J))), bin(bin(get(VI), loadF(at(P, J)), op.fMul), bin(get(WI), loadF(at(V, J)), op.fMul), op.fAdd), op.fSub)),
      ...bin(get(J), i32(1), op.add), ...set(J),
    ]),
    ...splat(get(VI)), ...set(VIS),
    ...splat(get(WI)), ...set(WIS),
    ...forLoop(J, get(J), get(N), 2, [
      ...storeV(addr(RI, get(J)), vSub(loadV(addr(RI, get(J))), vAdd(vMul(get(VIS), loadV(at(P, J))), vMul(get(WIS), loadV(at(V, J)))))),
    ]),
  ];
  const step: Code = [
    ...rowAddr(K, R0),
    ...bin(get(K), i32(1), op.add), ...set(K1),
    ...f64(0), ...set(TAIL2),
    ...forLoop(J, bin(get(K), i32(2), op.add), get(N), 1, [
      ...loadF(addr(R0, get(J))), ...set(AIJ),
      ...bin(get(TAIL2), bin(get(AIJ), get(AIJ), op.fMul), op.fAdd), ...set(TAIL2),
    ]),
    ...loadF(addr(R0, get(K1))), ...set(X0),
    // already tridiagonal in this column: e[k] = x0
    ...get(TAIL2), ...f64(0), op.fEq,
    0x04, 0x40,
    ...storeF(at(E, K), get(X0)),
    0x05,
    // alpha = x0 > 0 ? -norm : norm
    ...bin(get(TAIL2), bin(get(X0), get(X0), op.fMul), op.fAdd), op.fSqrt, ...set(ALPHA),
    ...get(ALPHA), op.fNeg, ...get(ALPHA), ...bin(get(X0), f64(0), op.fGt), op.select, ...set(ALPHA),
    ...forLoop(J, get(K1), get(N), 1, [...storeF(at(V, J), loadF(addr(R0, get(J)))), ...storeF(at(P, J), f64(0))]),
    ...storeF(at(V, K1), bin(get(X0), get(ALPHA), op.fSub)),
    ...bin(f64(2), bin(get(TAIL2), bin(loadF(at(V, K1)), loadF(at(V, K1)), op.fMul), op.fAdd), op.fDiv), ...set(BETA),
    ...forLoop(I, get(K1), get(N), 1, matvecRow),
    ...f64(0), ...set(VP),
    ...forLoop(J, get(K1), get(N), 1, [
      ...storeF(at(P, J), bin(loadF(at(P, J)), get(BETA), op.fMul)),
      ...bin(get(VP), bin(loadF(at(V, J)), loadF(at(P, J)), op.fMul), op.fAdd), ...set(VP),
    ]),
    ...bin(bin(f64(0.5), get(BETA), op.fMul), get(VP), op.fMul), ...set(HALF),
    ...forLoop(J, get(K1), get(N), 1, [...storeF(at(P, J), bin(loadF(at(P, J)), bin(get(HALF), loadF(at(V, J)), op.fMul), op.fSub))]),
    ...forLoop(I, get(K1), get(N), 1, updateRow),
    ...storeF(at(E, K), get(ALPHA)),
    op.end,
  ];
  return [...forLoop(K, i32(0), nMinus(2), 1, step), op.end];
}

function moduleBytes(): Uint8Array {
  const params = [I32, I32, I32, I32, I32, I32];
  const types = section(1, vec([[0x60, ...vec(params.map((t) => [t])), ...vec([])]]));
  const imports = section(2, vec([[...vec([...'env'].map((c) => [c.charCodeAt(0)])), ...vec([...'memory'].map((c) => [c.charCodeAt(0)])), 0x02, 0x00, ...uleb(1)]]));
  const funcs = section(3, vec([uleb(0)]));
  const name = [...'tridiagonalize'].map((c) => c.charCodeAt(0));
  const exports = section(7, vec([[...uleb(name.length), ...name, 0x00, ...uleb(0)]]));
  const locals = vec([[...uleb(6), I32], [...uleb(10), F64], [...uleb(4), V128]]);
  const body = [...locals, ...tridiagonalBody()];
  const code = section(10, vec([[...uleb(body.length), ...body]]));
  return Uint8Array.from([0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, ...types, ...imports, ...funcs, ...exports, ...code]);
}

/** Reduces the upper triangle of an n x n matrix to tridiagonal (d, e), like the JS loop. */
export interface WasmTridiagonalizer {
  readonly n: number;
  /** The matrix to load (n x n row-major float64; only the upper triangle is read), then reduced in place. */
  readonly a: Float64Array;
  /** Runs the reduction of `a`, writing the diagonal to `d` and off-diagonal to `e` (e[n-1] = 0). */
  run(d: Float64Array, e: Float64Array): void;
}

let compiled: WebAssembly.Module | null | undefined;

/** A tridiagonaliser for n x n matrices, or undefined when WebAssembly SIMD is unavailable. */
export function createWasmTridiagonalizer(n: number): WasmTridiagonalizer | undefined {
  if (compiled === undefined) {
    try {
      compiled = new WebAssembly.Module(moduleBytes() as Uint8Array<ArrayBuffer>);
    } catch {
      compiled = null;
    }
  }
  if (!compiled || n < 2) return undefined;
  const bytes = (n * n + 3 * n) * 8;
  const memory = new WebAssembly.Memory({ initial: Math.ceil(bytes / 65536) + 1 });
  const instance = new WebAssembly.Instance(compiled, { env: { memory } });
  const fn = instance.exports.tridiagonalize as (a: number, d: number, e: number, v: number, p: number, n: number) => void;
  const a = new Float64Array(memory.buffer, 0, n * n);
  const eOut = new Float64Array(memory.buffer, n * n * 8, n);
  const aBytes = n * n * 8;
  return {
    n,
    a,
    run(d: Float64Array, e: Float64Array): void {
      fn(0, 0, aBytes, aBytes + n * 8, aBytes + 2 * n * 8, n);
      for (let i = 0; i < n; i++) d[i] = a[i * n + i];
      e.set(eOut);
      e[n - 2] = a[(n - 2) * n + n - 1];
      e[n - 1] = 0;
    },
  };
}
