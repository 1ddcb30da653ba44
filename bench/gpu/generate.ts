/** Generates a synthetic checkpoint on the GPU machine (bundled there with esbuild; see analyze-auto.sh); `--qk-only` writes only the Q/K data (other tensors are holes). */
import { generateSyntheticCheckpoint } from '../synthetic';
generateSyntheticCheckpoint(process.argv[2] as 'mistral-7b', process.argv[3], { qkOnly: process.argv[4] === '--qk-only' }).then(() => console.log('generated'), (e) => { console.error(e); process.exit(1); });
