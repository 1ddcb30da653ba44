/**
 * Reading one head's projection as a dense matrix W (d_model x head_dim, row-major), the
 * orientation used everywhere downstream: the head's output is x . W for a row vector x.
 */
import type { Checkpoint } from '../checkpoint/checkpoint';
import type { HeadSlice } from './layout';

/**
 * Extracts a head's W (d_model x headDim) from a decoded projection tensor.
 * `tensor` holds the full projection decoded to float32, in its stored shape.
 */
export function headMatrixFrom(tensor: Float32Array, shape: readonly number[], slice: HeadSlice, headDim: number, out?: Float32Array): Float32Array {
  const dModel = slice.orientation === 'linear' ? shape[1] : shape[0];
  const w = out ?? new Float32Array(dModel * headDim);
  if (slice.orientation === 'linear') {
    // rows offset..offset+headDim of [out, in]: W[i][j] = T[offset + j][i]
    for (let j = 0; j < headDim; j++) {
      const row = (slice.offset + j) * dModel;
      for (let i = 0; i < dModel; i++) w[i * headDim + j] = tensor[row + i];
    }
  } else {
    const cols = shape[1];
    for (let i = 0; i < dModel; i++) {
      const src = i * cols + slice.offset;
      for (let j = 0; j < headDim; j++) w[i * headDim + j] = tensor[src + j];
    }
  }
  return w;
}

/** Reads a head's W by byte range: only its rows for `linear` tensors; the whole tensor for Conv1D. */
export async function readHeadMatrix(ckpt: Checkpoint, slice: HeadSlice, headDim: number): Promise<Float32Array> {
  const t = ckpt.tensor(slice.tensor);
  if (slice.orientation === 'linear') {
    const rows = await ckpt.readRowsF32(slice.tensor, slice.offset, slice.offset + headDim);
    return headMatrixFrom(rows, [headDim, t.shape[1]], { ...slice, offset: 0 }, headDim);
  }
  const all = await ckpt.readRowsF32(slice.tensor);
  return headMatrixFrom(all, t.shape, slice, headDim);
}

/** Reads a head's bias (headDim values), or undefined when the projection has none. */
export async function readHeadBias(ckpt: Checkpoint, slice: HeadSlice, headDim: number): Promise<Float32Array | undefined> {
  if (!slice.bias) return undefined;
  const b = await ckpt.readRowsF32(slice.bias, slice.offset, slice.offset + headDim);
  return b;
}
