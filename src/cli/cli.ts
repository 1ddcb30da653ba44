#!/usr/bin/env node
// first: no onnxruntime telemetry (see src/core/compute/noTelemetry.ts)
import '../core/compute/noTelemetry';
import { main } from './main';

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    process.stderr.write(`error: internal error: ${String(e)}\n`);
    process.exitCode = 1;
  },
);
