// Worker entry when running from TypeScript sources under tsx (tests, benches): worker threads
// do not inherit `--import tsx`, so register tsx here, then load the real entry.
// The bundles never use this file: they start dist/worker.js.
import { register } from 'tsx/esm/api';

register();
await import('./worker.ts');
