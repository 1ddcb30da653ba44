#!/usr/bin/env python3
"""Summarises onnxruntime profiles (FK_ORT_PROFILE=<prefix> writes <prefix>_<date>.json): the
session phases, and kernel time and launches by (op, execution provider), which shows the nodes a
provider did not take. Used by the GPU scripts (trace-h200.sh, profile-h200.sh).
Usage: profile_ops.py '<glob>' [--last] [--top N]   (--last: only the newest file)"""
import collections
import glob
import json
import sys

args = sys.argv[1:]
pattern = args[0]
files = sorted(glob.glob(pattern))
if '--last' in args:
    files = files[-1:]
top = int(args[args.index('--top') + 1]) if '--top' in args else 30
sess = collections.Counter()
ops = collections.Counter()
count = collections.Counter()
for f in files:
    for e in json.load(open(f)):
        if e.get('cat') == 'Session':
            sess[e['name']] += e.get('dur', 0)
        elif e.get('cat') == 'Node' and e['name'].endswith('_kernel_time'):
            a = e.get('args', {})
            k = (a.get('op_name', '?'), a.get('provider', '?'))
            ops[k] += e.get('dur', 0)
            count[k] += 1
print(', '.join(files), 'session phases (ms):', {k: round(v / 1000, 1) for k, v in sess.most_common(14)})
for k, v in ops.most_common(top):
    print(f'  {k[0]:32s} {k[1]:28s} {v / 1000:8.1f} ms  {count[k]} kernels')
