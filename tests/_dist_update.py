"""Worker for test_rl_distributed: one RL update on this rank's share of a fixed batch.

Launched with `accelerate launch --multi_gpu --num_processes W tests/_dist_update.py CONFIG EPISODES OUT`
(on a CPU-only machine that starts W processes joined with gloo).
Uses SGD (update = −lr·gradient) so the comparison is of the gradient itself.
"""

import sys

import torch

from reasonlab.config import load_config
from reasonlab.episode import read_episodes
from reasonlab.train.rl.config import RLConfig
from reasonlab.train.rl.engine import RLTrainer, rank, world

cfg = load_config(RLConfig, sys.argv[1])
episodes = read_episodes(sys.argv[2])
tr = RLTrainer(cfg)
tr.optimizer = torch.optim.SGD(tr.policy.parameters(), lr=1.0)
tr.scheduler = torch.optim.lr_scheduler.LambdaLR(tr.optimizer, lambda s: 1.0)
n = cfg.rollout.n
groups = [episodes[i : i + n] for i in range(0, len(episodes), n)]
mine = [e for g in groups[rank() :: world()] for e in g]
before = torch.cat([p.detach().flatten().clone() for p in tr.policy.parameters()])
row = tr.update(mine)
after = torch.cat([p.detach().flatten() for p in tr.policy.parameters()])
if rank() == 0:
    torch.save({"delta": after - before, "row": row, "world": world()}, sys.argv[3])
