"""Worker for the multi-process tests in test_rl: one RL update on this rank's share of a fixed batch.

Launched with `accelerate launch --multi_gpu --num_processes W tests/_dist_update.py CONFIG EPISODES OUT [CKPT]`
(on a CPU-only machine that starts W processes joined with gloo). The config's `sharding` decides
whether the models are replicated (DDP-style all-reduce) or sharded (FSDP).
Uses SGD (update = −lr·gradient) so the comparison is of the gradient itself. With CKPT, the trainer
also saves a checkpoint there and loads it back (under FSDP: gathered, then re-sharded).
"""

import sys
from pathlib import Path

import torch

from reasonlab.config import load_config
from reasonlab.episode import read_episodes
from reasonlab.train.fsdp import is_dtensor
from reasonlab.train.rl.config import RLConfig
from reasonlab.train.rl.engine import RLTrainer, rank, world


def flat(module):  # whole parameters (gathered under FSDP: a collective, every rank calls it)
    return torch.cat([(p.full_tensor() if is_dtensor(p) else p).detach().flatten().clone() for p in module.parameters()])


cfg = load_config(RLConfig, sys.argv[1])
episodes = read_episodes(sys.argv[2])
tr = RLTrainer(cfg)
trained = [p for g in tr.optimizer.param_groups for p in g["params"]]
tr.optimizer = torch.optim.SGD(trained, lr=1.0)
tr.scheduler = torch.optim.lr_scheduler.LambdaLR(tr.optimizer, lambda s: 1.0)
n = cfg.rollout.n
groups = [episodes[i : i + n] for i in range(0, len(episodes), n)]
mine = [e for g in groups[rank() :: world()] for e in g]
before = flat(tr.policy)
critic_before = flat(tr.critic) if tr.critic is not None else None
row = tr.update(mine)
after = flat(tr.policy)
out = {"delta": after - before, "row": row, "world": world(), "sharded": tr.sharded}
if tr.critic is not None:
    out["critic_delta"] = flat(tr.critic) - critic_before
if len(sys.argv) > 4:
    tr.out = Path(sys.argv[4])
    ckpt = tr.save()
    tr.load(ckpt)
    out["reloaded_equal"] = bool(torch.equal(flat(tr.policy), after))
    tr.sync_sampler()
    out["sampler_equal"] = bool(torch.equal(flat(tr.backend.model), after))
if rank() == 0:
    torch.save(out, sys.argv[3])
