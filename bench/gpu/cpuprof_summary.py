#!/usr/bin/env python3
"""Self time per function of each thread's V8 CPU profile (node --cpu-prof --cpu-prof-dir=DIR).
Usage: cpuprof_summary.py DIR [top]"""
import collections
import glob
import json
import sys

top = int(sys.argv[2]) if len(sys.argv) > 2 else 12
for f in sorted(glob.glob(sys.argv[1] + '/*.cpuprofile')):
    p = json.load(open(f))
    nodes = {n['id']: n for n in p['nodes']}
    self_time = collections.Counter()
    for sample, delta in zip(p['samples'], p['timeDeltas']):
        frame = nodes[sample]['callFrame']
        self_time[(frame['functionName'] or '(anonymous)') + ' ' + frame['url'].split('/')[-1] + ':' + str(frame['lineNumber'])] += delta
    print(f.split('/')[-1], 'total %.0f ms' % (sum(p['timeDeltas']) / 1000))
    for name, us in self_time.most_common(top):
        print('   %7.1f ms  %s' % (us / 1000, name))
