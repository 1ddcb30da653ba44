#!/usr/bin/env python3
"""Times `analyze` CLI runs on the GPU machine (spectrum-h200.sh): seconds reported by
`analyze --json`, wall time including Node start-up, peak RSS of the process (wait4 rusage).
Usage: runs.py <node> <checkpoint> <results.jsonl> <label> <repeats> [ENV=VALUE ...] -- <analyze args>"""
import json
import os
import subprocess
import sys
import time

node, ckpt, out, label, repeats = sys.argv[1:6]
rest = sys.argv[6:]
split = rest.index('--')
env = dict(os.environ)
for kv in rest[:split]:
    k, v = kv.split('=', 1)
    env[k] = v
args = rest[split + 1:]
# FK_BENCH_CLI=<path>: another build of the CLI (the previous commit's, for before/after runs)
cli = env.pop('FK_BENCH_CLI', 'dist/cli.js')
for i in range(int(repeats)):
    t0 = time.perf_counter()
    with open('/tmp/analyze.out', 'wb') as o, open('/tmp/analyze.err', 'wb') as e:
        p = subprocess.Popen([node, cli, 'analyze', ckpt, '--json', *args], stdout=o, stderr=e, env=env)
        _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    stdout = open('/tmp/analyze.out', 'rb').read()
    stderr = open('/tmp/analyze.err', 'rb').read()
    rss = usage.ru_maxrss
    rec = {'label': label, 'env': rest[:split], 'args': args, 'wall': round(wall, 3), 'rc': p.returncode}
    try:
        j = json.loads(stdout)
        rec.update({'seconds': round(j['seconds'], 3), 'backend': j['backend'], 'heads': len(j['heads']), 'notes': j.get('notes')})
        if os.environ.get('KEEP_JSON') and i == 0:
            open(os.environ['KEEP_JSON'], 'wb').write(stdout)
    except Exception:
        rec['stderr'] = stderr.decode(errors='replace')[-800:]
    # the CLI's progress lines ("analyze: layer 3/32 (0.2 s)"): when each layer finished
    rec['progress'] = [line.split('analyze: ')[-1] for line in stderr.decode(errors='replace').splitlines() if 'layer' in line][:40]
    rec['maxRssMB'] = round(rss / 1024)
    rec['cpuSeconds'] = round(usage.ru_utime + usage.ru_stime, 2)
    line = json.dumps(rec)
    print(line, flush=True)
    with open(out, 'a') as f:
        f.write(line + '\n')
