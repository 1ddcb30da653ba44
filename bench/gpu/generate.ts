/** Generates a synthetic checkpoint on the GPU machine (bundled there with esbuild; see analyze-auto.sh). */
import { generateSyntheticCheckpoint } from '../synthetic';
generateSyntheticCheckpoint(process.argv[2] as 'mistral-7b', process.argv[3]).then(() => console.log('generated'), (e) => { console.error(e); process.exit(1); });
