"""A whole study on verl: ``reasonlab run countdown-behaviors --preset gpu --engine verl``.

Writes, under ``<run dir>/verl/``:

    data/                       Countdown parquet + reward module (reasonlab export verl)
    accelerate_fsdp.yaml        accelerate config: SFT sharded with FSDP over the node's GPUs
    conditions/<c>/traces.jsonl priming traces (as the reasonlab engine writes them)
    conditions/<c>/sft.yaml     the condition's SFT settings (TRL, through accelerate + FSDP)
    conditions/<c>/overrides.yaml  verl settings of the condition's PPO run
    run_verl.sh                 every condition: SFT (skipped when done), then verl PPO from its checkpoint

The RL settings are the recipe's ``rl:`` block mapped by :func:`verl_overrides` (PPO with a critic,
GAE and the KL penalty in the reward for this study). Nothing is launched: the script is printed and
left for the cluster, where verl, vLLM and reasonlab are installed.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import yaml

ACCELERATE_FSDP = """# accelerate config for `reasonlab train sft` under FSDP (one node; set num_processes to its GPUs)
compute_environment: LOCAL_MACHINE
distributed_type: FSDP
mixed_precision: bf16
num_machines: 1
num_processes: {n_gpus}
fsdp_config:
  fsdp_version: 2
  fsdp_auto_wrap_policy: TRANSFORMER_BASED_WRAP
  fsdp_cpu_ram_efficient_loading: true
  fsdp_offload_params: false
  fsdp_reshard_after_forward: true
  fsdp_state_dict_type: FULL_STATE_DICT
"""


def export_behaviors_verl(recipe, out: Path, *, n_gpus: int = 8, nnodes: int = 1) -> dict[str, Path]:
    """Write the verl files of a cognitive-behaviors recipe into ``out/verl``; returns the main paths."""
    from reasonlab.config import validate
    from reasonlab.episode import append_jsonl
    from reasonlab.export.verl import export_verl
    from reasonlab.export.verl_config import VERL_VERSION, command, verl_overrides
    from reasonlab.priming.traces import generate_traces
    from reasonlab.train.rl.config import RLConfig
    from reasonlab.train.sft import SFTSettings

    from reasonlab.experiments.behaviors import CURATED, base_of

    for c in recipe.conditions:
        base = recipe.bases.get(base_of(c))
        if not isinstance(base, str):
            raise ValueError(f"condition {c}: bases.{base_of(c)} is a CPU model organism; --engine verl needs a real "
                             "base model (an HF folder or hub name), e.g. the gpu preset's meta-llama/Llama-3.2-3B")
        if c in CURATED:
            raise ValueError(f"condition {c}: the curated continued-pretraining arm is not exported to verl; continue "
                             "pretraining on your curated corpus and give the checkpoint as a base of its own recipe")
    seed0 = recipe.seeds[0]
    prime_seed = seed0 if recipe.priming_seed is None else recipe.priming_seed
    root = Path(out) / "verl"
    base_rl = validate(RLConfig, {**recipe.rl, "model": recipe.bases[base_of(recipe.conditions[0])], "task": "countdown",
                                  "task_args": recipe.task_args, "seed": seed0}, "rl")
    data = export_verl("countdown", root / "data", n_train=base_rl.train_pool, n_test=base_rl.eval_limit,
                       seed=seed0, task_args=recipe.task_args)
    acc = root / "accelerate_fsdp.yaml"
    acc.write_text(ACCELERATE_FSDP.format(n_gpus=n_gpus))
    lines = ["#!/usr/bin/env bash",
             f"# {recipe.name} on verl {VERL_VERSION}, written by reasonlab. Needs verl, vLLM and reasonlab on every node.",
             "set -euo pipefail", 'cd "$(dirname "$0")"']
    for c in recipe.conditions:
        d = root / "conditions" / c
        d.mkdir(parents=True, exist_ok=True)
        model = base_model = recipe.bases[base_of(c)]
        if c not in ("none", "rich_base"):
            traces = d / "traces.jsonl"
            if not traces.exists():
                append_jsonl(traces, generate_traces(c, recipe.traces, seed=prime_seed, task_args=recipe.task_args))
            sft = validate(SFTSettings, {**recipe.sft, "model": base_model, "data": [str(traces.resolve())],
                                         "out": str((d / "sft").resolve()), "seed": prime_seed}, f"{c}: sft")
            (d / "sft.yaml").write_text(yaml.safe_dump(sft.model_dump(), sort_keys=False))
            model = str((d / "sft" / "final").resolve())
            lines += [f"# --- {c}: priming SFT (TRL, FSDP through accelerate), then PPO",
                      f"[ -f {shlex.quote(model)}/config.json ] || accelerate launch --config_file accelerate_fsdp.yaml "
                      f"-m reasonlab.cli train sft --config conditions/{c}/sft.yaml --quiet"]
        else:
            lines.append(f"# --- {c}: PPO from the {base_of(c)} base model")
        for seed in recipe.seeds:  # one PPO run per seed, as the local experiment
            cfg = base_rl.model_copy(update={"model": model, "seed": seed})
            ov = verl_overrides(cfg, data_dir=data["train"].parent, n_gpus=n_gpus, nnodes=nnodes,
                                experiment_name=f"{recipe.name}-{c}-seed{seed}")
            ov["trainer.default_local_dir"] = str((d / f"seed-{seed}" / "checkpoints").resolve())
            name = "overrides.yaml" if seed == recipe.seeds[0] else f"overrides-seed{seed}.yaml"
            (d / name).write_text(yaml.safe_dump(ov, sort_keys=False))
            lines.append(command(ov) + ' "$@"')
    script = root / "run_verl.sh"
    script.write_text("\n".join(lines) + "\n")
    script.chmod(0o755)
    return {"data": data["train"].parent, "accelerate": acc, "script": script}
