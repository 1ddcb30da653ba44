/**
 * onnxruntime-node (1.30) writes a 1DS telemetry store, a device id and event payloads, to
 * `~/.cache/Microsoft/DeveloperTools/.onnxruntime/` unless `ORT_DISABLE_TELEMETRY=1` is in the
 * environment when the runtime initialises. Importing this module sets it; every entry point
 * (CLI, extension host, job worker) and the one module that loads onnxruntime
 * (./session.ts) import it before anything else. The variable is process-wide, so worker
 * threads and child processes started afterwards inherit it. docs/SECURITY.md states this.
 */
process.env.ORT_DISABLE_TELEMETRY = '1';

/** The variable and value this module sets (for tests and diagnostics). */
export const ORT_TELEMETRY_ENV = { name: 'ORT_DISABLE_TELEMETRY', value: '1' } as const;
