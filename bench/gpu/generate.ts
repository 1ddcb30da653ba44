/** Generates a synthetic checkpoint on the GPU machine (bundled there with esbuild; see analyze-auto.sh); `--qk-only` writes only the Q/K data (other tensors are holes). */
import { syntheticLlama1b } from '../eval';
import { generateSyntheticCheckpoint, type SyntheticKind } from '../synthetic';
const [kind, dir, flag] = process.argv.slice(2);
// llama-1.1b: bench/eval.ts's TinyLlama-1.1B shape (the eval benchmarks' model); else bench/synthetic.ts's kinds
(kind === 'llama-1.1b' ? syntheticLlama1b(dir) : generateSyntheticCheckpoint(kind as SyntheticKind, dir, { qkOnly: flag === '--qk-only' })).then(
  () => console.log('generated'),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
