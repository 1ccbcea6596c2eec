"""Eval accuracy of a countdown-behaviors run per condition and step (mean over seeds), and the study's
comparisons paired by seed, at the last step and as the mean over the late window (eval steps >= W),
which averages out some of the eval's sampling noise (docs/priming.md, session 9). Only runs that
reached their last step (LAST, default 100) count.

    python scripts/late_window.py W RUN_DIR [RUN_DIR ...] [--last 100]
"""
import json, glob, sys, statistics as st
from collections import defaultdict
args = sys.argv[1:]
LAST = int(args[args.index('--last') + 1]) if '--last' in args else 100
if '--last' in args:
    del args[args.index('--last'):args.index('--last') + 2]
W = int(args[0])
acc = defaultdict(dict)  # (condition, seed) -> {step: eval accuracy}
for run in args[1:]:
    for f in glob.glob(f'{run}/conditions/*/seed-*/rl/metrics.jsonl'):
        c = f.split('/conditions/')[1].split('/')[0]; s = int(f.split('seed-')[1].split('/')[0])
        for l in open(f):
            r = json.loads(l)
            if 'eval/accuracy' in r:
                acc[(c, s)][r['step']] = r['eval/accuracy']
acc = {k: v for k, v in acc.items() if max(v) >= LAST}  # finished runs only
def ms(v): return f"{st.mean(v):.3f} ± {st.stdev(v) if len(v) > 1 else 0:.3f}"
conds = sorted({c for c, _ in acc})
for c in conds:
    seeds = sorted(s for cc, s in acc if cc == c)
    steps = sorted(set.intersection(*[set(acc[(c, s)]) for s in seeds]))
    late = [st.mean([acc[(c, s)][k] for k in steps if k >= W]) for s in seeds]
    print(f"{c:15s} seeds {seeds} " + " ".join(f"{k}:{st.mean([acc[(c, s)][k] for s in seeds]):.3f}" for k in steps)
          + f" | last {ms([acc[(c, s)][steps[-1]] for s in seeds])} | late>={W} {ms(late)}")
def pair(a, b):
    seeds = sorted(set(s for c, s in acc if c == a) & set(s for c, s in acc if c == b))
    if not seeds: return
    last = max(acc[(a, seeds[0])]); d = [acc[(a, s)][last] - acc[(b, s)][last] for s in seeds]
    dl = [st.mean([acc[(a, s)][k] for k in acc[(a, s)] if k >= W]) - st.mean([acc[(b, s)][k] for k in acc[(b, s)] if k >= W]) for s in seeds]
    se = lambda v: (st.stdev(v) / len(v) ** .5) if len(v) > 1 else float('nan')
    print(f"{a} − {b} (n={len(seeds)}): step {last} {ms(d)}{' *' if abs(st.mean(d)) > 2 * se(d) else ''}; "
          f"late>={W} {ms(dl)}{' *' if abs(st.mean(dl)) > 2 * se(dl) else ''}")
for a, b in [('all_strategies', 'none'), ('no_positive', 'none'), ('rich_base', 'none'), ('empty_cot', 'none'),
             ('all_strategies', 'empty_cot'), ('no_positive', 'empty_cot')]:
    pair(a, b)
