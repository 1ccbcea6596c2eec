"""RL engine: every algorithm runs and checkpoints; micro-batching does not change the update;
a SIGKILLed run resumes to the same metrics; reward rises on a toy task (slow)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from reasonlab.train.rl.config import RLConfig
from reasonlab.train.rl.engine import RLTrainer, train_rl

VOLATILE = {"time_rollout_s", "time_train_s", "rollout_tok_per_s"}


@pytest.fixture(scope="module")
def letter_model(tmp_path_factory):
    from reasonlab.models import create_tiny

    return str(create_tiny(tmp_path_factory.mktemp("m") / "tiny", tasks=("toy/letter", "countdown"), seed=0))


def cfg_for(model, out, **kw):
    base = dict(model=model, task="toy/letter", steps=2, train_pool=32, tensorboard=False, out=str(out),
                rollout={"prompts_per_step": 4, "n": 4, "max_new_tokens": 8}, optim={"lr": 1e-3},
                eval_limit=4, eval_n=2)
    for k, v in kw.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            base[k] = {**base[k], **v}
        else:
            base[k] = v
    return RLConfig.model_validate(base)


@pytest.mark.parametrize("algorithm,extra", [
    ("grpo", {"loss": {"kl_coef": 0.05, "entropy_coef": 0.01}}),
    ("dr_grpo", {"loss": {"agg": "sum_norm"}}),
    ("rloo", {"loss": {"kl_coef": 0.05, "kl_in_reward": True, "agg": "sequence"}}),
    ("ppo", {"critic": "model", "loss": {"kl_coef": 0.01, "kl_in_reward": True}, "optim": {"epochs": 2, "minibatch_size": 8}}),
    ("ppo", {"critic": "head", "loss": {"clip_high": 0.28}}),
    ("ppo", {"critic": "head", "loss": {"kl_coef": 0.05, "kl_in_reward": True, "kl_estimator": "k1",
                                        "kl_reward_norm": "mean"}}),
])
def test_algorithms_run_log_and_checkpoint(letter_model, tmp_path, algorithm, extra):
    cfg = cfg_for(letter_model, tmp_path / "run", algorithm=algorithm, **extra)
    out = train_rl(cfg, show_progress=False)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        assert all(isinstance(v, (int, float)) and v == v for v in r.values())  # finite, no NaN
        assert r["ratio"] == pytest.approx(1.0, abs=0.2)
    assert "eval/pass@1" in rows[-1] and "eval/pass@2" in rows[-1]
    if "kl_coef" in extra.get("loss", {}):  # in the loss or in the reward, the KL is logged
        assert "kl" in rows[-1]
    if algorithm == "ppo":
        assert "value_loss" in rows[-1]
    ckpt = out / "checkpoints" / "step-000002"
    assert (ckpt / "config.json").exists() and (ckpt / "trainer_state.pt").exists()
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(ckpt)  # a plain HF checkpoint


def test_micro_batching_does_not_change_the_update(letter_model, tmp_path):
    params = []
    for mbs in (16, 3):
        cfg = cfg_for(letter_model, tmp_path / f"mb{mbs}", algorithm="grpo", steps=1,
                      optim={"micro_batch_size": mbs, "lr": 1e-2})
        tr = RLTrainer(cfg)
        # SGD makes the update linear in the gradient (Adam's first step is ~lr·sign(g), which would
        # turn float rounding noise in near-zero gradients into visible differences).
        tr.optimizer = torch.optim.SGD(tr.policy.parameters(), lr=1.0)
        tr.scheduler = torch.optim.lr_scheduler.LambdaLR(tr.optimizer, lambda s: 1.0)
        before = torch.cat([p.detach().flatten().clone() for p in tr.policy.parameters()])
        tr.step()
        params.append(torch.cat([p.detach().flatten() for p in tr.policy.parameters()]) - before)
    assert params[0].abs().max() > 1e-4  # the update is not trivially zero
    assert torch.allclose(params[0], params[1], atol=1e-6, rtol=1e-4)


def test_exact_resume_after_sigkill(letter_model, tmp_path):
    def recipe(out):
        c = cfg_for(letter_model, out, algorithm="grpo", steps=6, save_every=1, optim={"lr": 5e-3}).model_dump(mode="json")
        path = tmp_path / f"{out.name}.yaml"
        path.write_text(yaml.safe_dump(c))
        return path

    cmd = lambda p, *a: [sys.executable, "-m", "reasonlab.cli", "train", "rl", "--config", str(p), "--quiet", *a]  # noqa: E731
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    ref = subprocess.run(cmd(recipe(tmp_path / "ref")), env=env, capture_output=True, text=True, timeout=600)
    assert ref.returncode == 0, ref.stderr
    out = tmp_path / "killed"
    proc = subprocess.Popen(cmd(recipe(out)), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not (out / "checkpoints" / "step-000003").exists():
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "checkpoints" / "step-000006").exists(), "the run finished before it could be killed"
    res = subprocess.run(cmd(recipe(out), "--resume"), env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    load = lambda d: [{k: v for k, v in json.loads(x).items() if k not in VOLATILE}  # noqa: E731
                      for x in (d / "metrics.jsonl").read_text().splitlines() if x.strip()]
    a, b = load(tmp_path / "ref"), load(out)
    assert [r["step"] for r in b] == [1, 2, 3, 4, 5, 6]
    assert a == b
    # running without --resume into a used directory is refused
    again = subprocess.run(cmd(recipe(out)), env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and "--resume" in again.stderr


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["ppo", "grpo", "rloo"])
def test_reward_rises_on_toy_task(letter_model, tmp_path, algorithm):
    cfg = cfg_for(letter_model, tmp_path / algorithm, algorithm=algorithm, steps=20, train_pool=64,
                  rollout={"prompts_per_step": 8, "n": 4, "max_new_tokens": 16}, optim={"lr": 1e-2, "micro_batch_size": 32})
    t0 = time.time()
    out = train_rl(cfg, show_progress=False)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    first = sum(r["reward"] for r in rows[:4]) / 4
    last = sum(r["reward"] for r in rows[-4:]) / 4
    print(f"{algorithm}: reward {first:.3f} -> {last:.3f} in {time.time() - t0:.0f}s")
    assert last > first + 0.1, (first, last)


@pytest.mark.parametrize("algorithm", ["grpo", "ppo"])
def test_two_processes_make_the_same_update_as_one(letter_model, tmp_path, algorithm):
    """`accelerate launch` with 2 CPU processes (gloo) on a fixed global batch = 1 process on it."""
    extra = {"critic": "head"} if algorithm == "ppo" else {}
    cfg = cfg_for(letter_model, tmp_path / "gen", algorithm=algorithm, steps=1,
                  rollout={"prompts_per_step": 4, "n": 4, "max_new_tokens": 8}, optim={"micro_batch_size": 3}, **extra)
    episodes = RLTrainer(cfg).rollout(0)
    assert len({e.reward for e in episodes}) > 1
    results = _launch_update(tmp_path, cfg, episodes)
    assert results[2]["world"] == 2 and results[1]["world"] == 1
    d1, d2 = results[1]["delta"], results[2]["delta"]
    assert d1.abs().max() > 1e-5
    assert torch.allclose(d1, d2, atol=1e-6, rtol=1e-4), (d1 - d2).abs().max()
    for k in ("reward", "loss", "clip_frac"):
        assert results[1]["row"][k] == pytest.approx(results[2]["row"][k], abs=1e-5)


def _launch_update(tmp_path, cfg, episodes, worlds=(1, 2), ckpt=False):
    """Run tests/_dist_update.py under `accelerate launch` with each number of processes; their results."""
    import shutil

    from reasonlab.episode import append_jsonl

    ep_path = tmp_path / "episodes.jsonl"
    append_jsonl(ep_path, episodes)
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    accelerate = shutil.which("accelerate")
    assert accelerate, "accelerate's launcher is not on PATH"
    results = {}
    for w in worlds:
        out = tmp_path / f"w{w}.pt"
        # `--multi_gpu` is accelerate's torchrun-style multi-process launcher; without CUDA the engine
        # joins a gloo process group (accelerate's `--cpu` flag alone starts a single process).
        mode = ["--multi_gpu"] if w > 1 else ["--cpu"]
        cmd = [accelerate, "launch", *mode, "--num_processes", str(w), "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(29500 + w + os.getpid() % 500),
               os.path.join(os.path.dirname(__file__), "_dist_update.py"), str(cfg_path), str(ep_path), str(out)]
        if ckpt:
            cmd.append(str(tmp_path / f"ckpt-w{w}"))
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=dict(os.environ, OMP_NUM_THREADS="1"))
        assert r.returncode == 0, r.stderr[-3000:]
        results[w] = torch.load(out)
    return results


def test_fsdp_two_processes_make_the_same_update_as_one(letter_model, tmp_path):
    """sharding: fsdp — policy, critic and reference sharded over 2 CPU processes (gloo) — makes the
    update of 1 process with whole models; its checkpoint is the whole model and loads back."""
    from safetensors.torch import load_file

    cfg = cfg_for(letter_model, tmp_path / "gen", algorithm="ppo", critic="model", steps=1, sharding="fsdp",
                  loss={"kl_coef": 0.05}, rollout={"prompts_per_step": 4, "n": 4, "max_new_tokens": 8},
                  optim={"micro_batch_size": 3})
    episodes = RLTrainer(cfg).rollout(0)
    assert len({e.reward for e in episodes}) > 1
    res = _launch_update(tmp_path, cfg, episodes, ckpt=True)
    assert res[2]["world"] == 2 and res[2]["sharded"] and not res[1]["sharded"]
    for key in ("delta", "critic_delta"):
        d1, d2 = res[1][key], res[2][key]
        assert d1.abs().max() > 1e-5
        assert torch.allclose(d1, d2, atol=1e-6, rtol=1e-4), (key, (d1 - d2).abs().max())
    # (value_loss is logged as a mean of micro-batch means, which differ with the split: not compared)
    for k in ("reward", "loss", "kl", "grad_norm"):
        assert res[1]["row"][k] == pytest.approx(res[2]["row"][k], rel=1e-4, abs=1e-5), k
    assert res[2]["reloaded_equal"] and res[2]["sampler_equal"]
    w1 = load_file(tmp_path / "ckpt-w1" / "checkpoints" / "step-000001" / "model.safetensors")
    w2 = load_file(tmp_path / "ckpt-w2" / "checkpoints" / "step-000001" / "model.safetensors")
    # a tied lm_head is written by one save path and implied by the other; everything else must match
    assert (w1.keys() ^ w2.keys()) <= {"lm_head.weight"}, w1.keys() ^ w2.keys()
    for k in w1.keys() & w2.keys():
        assert torch.allclose(w1[k], w2[k], atol=1e-6, rtol=1e-4), k


def test_fsdp_needs_equal_batches_per_rank(letter_model, tmp_path):
    """An uneven split would leave one rank waiting in a collective forever: refused at once."""
    from reasonlab.train.rl import engine

    tr = RLTrainer(cfg_for(letter_model, tmp_path / "u", sharding="fsdp", rollout={"prompts_per_step": 3}))
    saved = engine.world
    engine.world = lambda: 2
    try:
        with pytest.raises(ValueError, match="rollout.prompts_per_step"):
            tr.check_shardable()
    finally:
        engine.world = saved


def test_forward_logp_on_kept_positions_equals_full_logits(letter_model, tmp_path):
    """Logits only from the first policy token on: same log-probs and entropies as the full forward."""
    from reasonlab.train.rl import losses as L
    from reasonlab.train.rl.engine import collate

    tr = RLTrainer(cfg_for(letter_model, tmp_path / "r", algorithm="grpo"))
    eps = tr.rollout(0)
    b = collate(eps, tr.pad_id)
    idx = torch.arange(len(eps))
    m = b["mask"].clone()
    m[:, 0] = 0
    with torch.no_grad():
        ent, logp, _ = tr.forward_logp(tr.policy, b, idx, entropy="value")
        full = tr.policy(input_ids=b["tokens"], attention_mask=b["attn"]).logits.float() / tr.cfg.rollout.temperature
    want = L.token_logprobs(full, b["tokens"])
    want_ent = L.entropy_from_logits(full)
    want_ent = torch.cat([torch.zeros_like(want_ent[:, :1]), want_ent[:, :-1]], dim=1)
    assert logp.shape == want.shape and m.sum() > 0
    assert torch.allclose(logp[m.bool()], want[m.bool()], atol=1e-5)
    assert torch.allclose(ent[m.bool()], want_ent[m.bool()], atol=1e-4)
    # right padding beyond the micro-batch's longest sequence is cut: extra padding columns, or a
    # micro-batch of the shortest sequences, give the same log-probs, zero-padded to the batch's width
    wide = {k: (torch.nn.functional.pad(v, (0, 7), value=tr.pad_id if k == "tokens" else 0) if v.dim() == 2 else v)
            for k, v in b.items()}
    short = torch.argsort(b["attn"].sum(1))[:2]
    with torch.no_grad():
        _, logp_wide, _ = tr.forward_logp(tr.policy, wide, idx)
        _, logp_short, _ = tr.forward_logp(tr.policy, b, short)
    assert logp_wide.shape == (len(eps), b["tokens"].shape[1] + 7) and torch.all(logp_wide[:, -7:] == 0)
    assert torch.allclose(logp_wide[:, : logp.shape[1]][m.bool()], logp[m.bool()], atol=1e-5)
    assert logp_short.shape == (2, logp.shape[1])
    assert torch.allclose(logp_short[m[short].bool()], logp[short][m[short].bool()], atol=1e-5)
    assert torch.all(logp_short[:, int(b["attn"][short].sum(1).max()):] == 0)
    # and the sampler's own log-probs agree with the trainer's (same fp32 weights)
    sampled = torch.zeros_like(logp)
    for i, e in enumerate(eps):
        sampled[i, : len(e.logprobs)] = torch.tensor(e.logprobs)
    assert torch.allclose(logp[m.bool()], sampled[m.bool()], atol=1e-4)


def test_on_policy_shortcut_makes_the_same_update(letter_model, tmp_path):
    """One epoch, one minibatch: old log π = log π.detach() equals a separate no-grad forward."""
    deltas = []
    for skip in (True, False):
        tr = RLTrainer(cfg_for(letter_model, tmp_path / f"s{skip}", algorithm="grpo", steps=1, optim={"lr": 1e-2}))
        tr.skip_old_forward = skip
        tr.optimizer = torch.optim.SGD(tr.policy.parameters(), lr=1.0)
        tr.scheduler = torch.optim.lr_scheduler.LambdaLR(tr.optimizer, lambda s: 1.0)
        before = torch.cat([p.detach().flatten().clone() for p in tr.policy.parameters()])
        tr.step()
        deltas.append(torch.cat([p.detach().flatten() for p in tr.policy.parameters()]) - before)
    assert deltas[0].abs().max() > 1e-4
    assert torch.allclose(deltas[0], deltas[1], atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("critic", ["head", "model"])
def test_single_pass_ppo_makes_the_same_update(letter_model, tmp_path, critic):
    """optim.single_pass: the update's forward passes double as the old-policy and critic passes;
    the update (policy and critic) is the one the separate no-grad passes give, and one forward fewer runs."""
    deltas, calls = [], []
    for single in (True, False):
        tr = RLTrainer(cfg_for(letter_model, tmp_path / f"s{single}{critic}", algorithm="ppo", critic=critic, steps=1,
                               loss={"kl_coef": 0.05, "kl_in_reward": True, "kl_estimator": "k1"},
                               optim={"lr": 1e-2, "single_pass": single, "micro_batch_size": 4}))
        params = [p for p in tr.trained_modules().parameters() if p.requires_grad]
        tr.optimizer = torch.optim.SGD(params, lr=1.0)
        tr.scheduler = torch.optim.lr_scheduler.LambdaLR(tr.optimizer, lambda s: 1.0)
        n = [0]
        fwd = tr.forward_logp

        def counted(model, *a, policy=tr.policy, **k):
            n[0] += model is policy  # the reference's passes are not counted
            return fwd(model, *a, **k)

        tr.forward_logp = counted
        before = torch.cat([p.detach().flatten().clone() for p in params])
        row = tr.step()
        deltas.append(torch.cat([p.detach().flatten() for p in params]) - before)
        calls.append(n[0])
        assert row["time_prepare_s"] >= 0
    assert deltas[0].abs().max() > 1e-4
    assert torch.allclose(deltas[0], deltas[1], atol=1e-6, rtol=1e-4)
    assert calls[0] * 2 == calls[1]  # 16 sequences in micro-batches of 4: 4 policy forwards instead of 8


def test_bf16_sampler_follows_the_policy(letter_model, tmp_path):
    tr = RLTrainer(cfg_for(letter_model, tmp_path / "b", algorithm="grpo", dtype="bf16", steps=1,
                           optim={"lr": 1e-2}))
    assert tr.sampler is not None and next(tr.sampler.parameters()).dtype == torch.bfloat16
    assert tr.backend.model is tr.sampler
    tr.step()
    tr.sync_sampler()
    for s, p in zip(tr.sampler.parameters(), tr.policy.parameters()):
        assert torch.equal(s, p.detach().to(torch.bfloat16))
    fp32 = RLTrainer(cfg_for(letter_model, tmp_path / "f", algorithm="grpo", dtype="bf16",
                             rollout={"dtype": "fp32"}))
    assert fp32.sampler is None and fp32.backend.model is fp32.policy
