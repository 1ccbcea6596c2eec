"""EntroPO-DPO/KTO on TRL: α = 0 is TRL exactly, what α does (tempering; spreading mass over tied
trajectories), multi-turn masks, pairing strategies, end-to-end training with resume."""

import json
import math

import pytest
import torch
from datasets import Dataset

from reasonlab.episode import Episode, append_jsonl
from reasonlab.rollout.chat import encode_chat
from reasonlab.train.preference import (
    EntroPODPOConfig,
    EntroPODPOTrainer,
    EntroPOKTOConfig,
    EntroPOKTOTrainer,
    PreferenceSettings,
    train_preference,
)
from reasonlab.train.preference_data import (
    make_pairs,
    make_unpaired,
    pairs_to_dataset,
    rejection_sample,
    unpaired_to_dataset,
)
from reasonlab.train.sft import tokenize_episode


def traj(pid, correct, answer, *, tool="```output\n2\n```\n", reward=None, think="let me run"):
    """A two-turn tool-using trajectory: code, interpreter output (a tool message), answer."""
    msgs = [{"role": "system", "content": "Solve it."}, {"role": "user", "content": f"Problem {pid}"},
            {"role": "assistant", "content": f"{think}\n```python\nprint(2)\n```\n"},
            {"role": "tool", "content": tool},
            {"role": "assistant", "content": f"<answer>{answer}</answer>"}]
    return Episode("toy", pid, 0, msgs, correct=correct, reward=float(correct) if reward is None else reward)


EPISODES = [traj("p1", True, "2"), traj("p1", False, "3", tool="```output\nerror\n```\n"),
            traj("p2", True, "12", think="compute"), traj("p2", False, "no idea")]


@pytest.fixture(scope="module")
def tok(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


def args(cls, tmp_path, **kw):
    base = {"output_dir": str(tmp_path / "o"), "use_cpu": True, "report_to": "none", "bf16": False,
            "max_length": 256, "per_device_train_batch_size": len(EPISODES), "disable_tqdm": True}
    return cls(**{**base, **kw})


def model(path, *, noise=0.0, norm_scale=1.0):
    """The tiny model, optionally perturbed (seeded: two calls give equal weights) or with its final
    RMSNorm gain scaled, which scales every logit: norm_scale = 1/T is the model at temperature T."""
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(path)
    with torch.no_grad():
        if noise:
            g = torch.Generator().manual_seed(1)
            for p in m.parameters():
                p.add_(noise * torch.randn(p.shape, generator=g))
        m.model.norm.weight.mul_(norm_scale)
    return m


def collate(trainer):
    ds = trainer.train_dataset
    return trainer.data_collator([ds[i] for i in range(len(ds))])


# -- α = 0 is TRL ------------------------------------------------------------------------------------


def test_dpo_alpha0_is_trl_dpo(tiny_model, tok, tmp_path):
    from trl import DPOConfig, DPOTrainer

    ours = EntroPODPOTrainer(model(tiny_model, noise=0.05), args=args(EntroPODPOConfig, tmp_path),
                             train_dataset=pairs_to_dataset(make_pairs(EPISODES), tok), processing_class=tok)
    text = Dataset.from_dict({"prompt": ["Q"], "chosen": ["a"], "rejected": ["b"]})  # TRL's own (unused) data
    theirs = DPOTrainer(model(tiny_model, noise=0.05), args=args(DPOConfig, tmp_path), train_dataset=text,
                        processing_class=tok)
    batch = collate(ours)  # multi-turn pairs, tool outputs masked out
    loss_ours, loss_theirs = ours.compute_loss(ours.model, batch), theirs.compute_loss(theirs.model, batch)
    assert abs(loss_ours.item() - 0.6931) > 1e-3  # the policy differs from the reference
    assert torch.equal(loss_ours, loss_theirs)
    loss_ours.backward()
    loss_theirs.backward()
    for p, q in zip(ours.model.parameters(), theirs.model.parameters(), strict=True):
        assert torch.equal(p.grad, q.grad)


def test_kto_alpha0_is_trl_kto(tiny_model, tok, tmp_path):
    from trl import KTOConfig, KTOTrainer

    ours = EntroPOKTOTrainer(model(tiny_model, noise=0.05), args=args(EntroPOKTOConfig, tmp_path),
                             train_dataset=unpaired_to_dataset(make_unpaired(EPISODES), tok),
                             processing_class=tok)
    text = Dataset.from_dict({"prompt": ["Q", "Q"], "completion": ["a", "b"], "label": [True, False]})
    theirs = KTOTrainer(model(tiny_model, noise=0.05), args=args(KTOConfig, tmp_path), train_dataset=text,
                        processing_class=tok)
    batch = collate(ours)
    assert batch["label"].any() and not batch["label"].all()
    loss_ours, loss_theirs = ours.compute_loss(ours.model, batch), theirs.compute_loss(theirs.model, batch)
    assert abs(loss_ours.item() - 0.5) > 1e-3
    assert torch.equal(loss_ours, loss_theirs)
    loss_ours.backward()
    loss_theirs.backward()
    for p, q in zip(ours.model.parameters(), theirs.model.parameters(), strict=True):
        assert torch.equal(p.grad, q.grad)


def test_alpha_needs_the_derived_loss(tiny_model, tok, tmp_path):
    ds = pairs_to_dataset(make_pairs(EPISODES), tok)
    with pytest.raises(ValueError, match="sigmoid"):
        EntroPODPOTrainer(model(tiny_model), train_dataset=ds, processing_class=tok,
                          args=args(EntroPODPOConfig, tmp_path, alpha=0.1, loss_type="ipo"))
    with pytest.raises(ValueError, match="alpha"):
        EntroPODPOTrainer(model(tiny_model), args=args(EntroPODPOConfig, tmp_path, alpha=-0.1),
                          train_dataset=ds, processing_class=tok)


def test_sft_weight_adds_the_chosen_nll(tiny_model, tok, tmp_path):
    """RPO: sft_weight = w adds w × the chosen trajectories' mean NLL over their policy tokens (tool output
    excluded) to the (EntroPO-)DPO loss; KTO refuses it."""
    ds = pairs_to_dataset(make_pairs(EPISODES), tok)
    losses = {}
    for w in (0.0, 0.5):
        rpo = {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, w]} if w else {}
        t = EntroPODPOTrainer(model(tiny_model, noise=0.05), train_dataset=ds, processing_class=tok,
                              args=args(EntroPODPOConfig, tmp_path, alpha=0.1, **rpo))
        batch = collate(t)
        losses[w] = t.compute_loss(t.model, batch).item()
    m = model(tiny_model, noise=0.05)
    with torch.no_grad():
        logits = m(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    logps = torch.log_softmax(logits.float(), -1).gather(-1, batch["input_ids"][:, 1:, None])[..., 0]
    mask = batch["completion_mask"][:, 1:].bool()
    half = len(mask) // 2  # chosen first, then rejected
    nll = -logps[:half][mask[:half]].mean().item()
    assert nll > 1.0
    assert losses[0.5] - losses[0.0] == pytest.approx(0.5 * nll, rel=1e-4)
    with pytest.raises(ValueError, match="sft_weight"):
        PreferenceSettings(model=tiny_model, data=[], method="kto", sft_weight=1.0)


# -- what α does -------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["dpo", "kto"])
def test_alpha_is_a_temperature(method, tiny_model, tok, tmp_path):
    """Exact identity: L_α(π^τ) = L_0(π), τ = β/(β+α), where π^τ is π at temperature 1/τ.

    So the α-loss is the α=0 loss seen through a (1+α/β)-times hotter policy, and its minimiser is the
    α=0 minimiser at that temperature: higher entropy. Checked on one prompt with one-token completions,
    where tempering the whole completion is tempering the logits (the final-norm gain). KTO: holds when
    TRL's clamp of the KL estimate at 0 is inactive (asserted)."""
    beta, alpha = 0.1, 0.1
    tau = beta / (beta + alpha)
    prompt = encode_chat(tok, [{"role": "user", "content": "Q"}])
    with torch.no_grad():
        logits = model(tiny_model)(torch.tensor([prompt])).logits[0, -1]
    top = [int(t) for t in logits.argsort(descending=True)[:4]]
    if method == "dpo":
        rows = {"prompt_ids": [prompt] * 4, "chosen_ids": [[top[0]], [top[2]], [top[1]], [top[3]]],
                "chosen_policy_mask": [[1]] * 4, "rejected_ids": [[top[3]], [top[1]], [top[0]], [top[2]]],
                "rejected_policy_mask": [[1]] * 4}
        trainer, config = EntroPODPOTrainer, EntroPODPOConfig
    else:
        rows = {"prompt_ids": [prompt] * 4, "completion_ids": [[t] for t in top],
                "completion_policy_mask": [[1]] * 4, "label": [True, False, True, False]}
        trainer, config = EntroPOKTOTrainer, EntroPOKTOConfig
    ds = Dataset.from_dict(rows)

    def loss(a, norm_scale):
        t = trainer(model(tiny_model, norm_scale=norm_scale), args=args(config, tmp_path, alpha=a, beta=beta),
                    train_dataset=ds, processing_class=tok)
        value = t.compute_loss(t.model, collate(t))
        if method == "kto":
            assert t._metrics["eval"]["kl"][-1] > 0  # the KL clamp is inactive
        return value

    sharp = 3.0  # a policy sharper than the reference, so that the losses are not at their initial values
    l0, l_alpha = loss(0.0, sharp), loss(alpha, sharp * tau)
    torch.testing.assert_close(l_alpha, l0, rtol=1e-5, atol=1e-6)
    assert abs(loss(alpha, sharp).item() - l0.item()) > 1e-3  # the same policy without tempering differs


def seq_logps(trainer, batch):
    """Sequence log-probs of the trainer's *policy*, through TRL's own (reference) log-prob path."""
    with torch.no_grad():
        return trainer.compute_ref_log_probs(trainer.model, batch)


def test_alpha_spreads_mass_over_tied_trajectories(tiny_model, tok, tmp_path):
    """Two correct trajectories of one problem, each preferred once (a tie). At π = π_ref the DPO
    gradient vanishes; EntroPO's gradient, with z = α·Δlog π_ref, is
    (β+α)/2·tanh(z/2)·∇Δlog π, so a step moves log π(a) − log π(b) towards 0: it raises the
    entropy of π restricted to {a, b}, spreading mass evenly over equally good trajectories."""
    a = traj("p1", True, "2", think="first idea")
    b = traj("p1", True, "2", think="a much longer second idea that also works")
    ds = pairs_to_dataset([(a, b), (b, a)], tok)
    gaps, norms = {}, {}
    for alpha in (0.0, 0.5):
        t = EntroPODPOTrainer(model(tiny_model), args=args(EntroPODPOConfig, tmp_path, alpha=alpha),
                              train_dataset=ds, processing_class=tok)
        batch = collate(t)
        chosen, _ = seq_logps(t, batch)
        before = (chosen[0] - chosen[1]).item()  # log π(a) − log π(b)
        t.compute_loss(t.model, batch).backward()
        norms[alpha] = torch.sqrt(sum((p.grad ** 2).sum() for p in t.model.parameters())).item()
        with torch.no_grad():
            for p in t.model.parameters():
                p.sub_(0.05 * p.grad)
        chosen, _ = seq_logps(t, batch)
        gaps[alpha] = (before, (chosen[0] - chosen[1]).item())
    assert abs(gaps[0.5][0]) > 0.5  # the reference does prefer one of them
    assert norms[0.0] < 1e-6 * norms[0.5]  # DPO: no gradient on a tie
    assert abs(gaps[0.0][1] - gaps[0.0][0]) < 1e-4
    assert abs(gaps[0.5][1]) < abs(gaps[0.5][0]) - 0.01  # EntroPO: the gap shrinks


def test_precomputed_reference_gives_the_same_loss(tiny_model, tok, tmp_path):
    # Unperturbed policies: with precompute_ref_log_probs and no ref_model, TRL's reference is the policy
    # passed in, while the live path loads the reference from the model's path.
    ds = pairs_to_dataset(make_pairs(EPISODES), tok)
    live = EntroPODPOTrainer(model(tiny_model), args=args(EntroPODPOConfig, tmp_path, alpha=0.05),
                             train_dataset=ds, processing_class=tok)
    pre = EntroPODPOTrainer(model(tiny_model),
                            args=args(EntroPODPOConfig, tmp_path / "p", alpha=0.05,
                                      precompute_ref_log_probs=True),
                            train_dataset=ds, processing_class=tok)
    batch = collate(pre)
    assert "ref_chosen_logps" in batch
    loss = pre.compute_loss(pre.model, batch)
    assert abs(loss.item() - 0.6931) > 1e-3  # α > 0 moves the loss off log 2 even at π = π_ref
    torch.testing.assert_close(loss, live.compute_loss(live.model, collate(live)))


# -- multi-turn masks --------------------------------------------------------------------------------


def test_completion_mask_is_the_episode_mask(tok, tiny_model, tmp_path):
    pairs = make_pairs(EPISODES)
    t = EntroPODPOTrainer(model(tiny_model), args=args(EntroPODPOConfig, tmp_path),
                          train_dataset=pairs_to_dataset(pairs, tok), processing_class=tok)
    batch = collate(t)
    episodes = [c for c, _ in pairs] + [r for _, r in pairs]  # TRL's batch: all chosen, then all rejected
    for row, e in enumerate(episodes):
        ids, mask = tokenize_episode(tok, e.messages)
        assert batch["input_ids"][row, : len(ids)].tolist() == ids
        assert batch["completion_mask"][row].tolist() == mask + [0] * (batch["input_ids"].size(1) - len(ids))
        policy = tok.decode([i for i, m in zip(ids, mask) if m])
        assert "```output" not in policy and "<answer>" in policy and "print(2)" in policy


def test_tool_outputs_get_no_gradient_and_no_log_prob(tok, tiny_model, tmp_path):
    """Tool-output tokens are context, never targets. (1) The loss has exactly zero gradient w.r.t. the
    final hidden state at every position whose next token is not a policy token (that hidden state only
    scores its next token; everything it feeds into later positions goes through earlier layers).
    (2) The trainers' sequence log-probs are Σ over policy tokens only, computed here independently
    from plain logits, for two trajectories that differ only in their tool output."""
    eps = [traj("p1", True, "2"), traj("p1", False, "2", tool="```output\nTraceback: boom\n```\n")]
    t = EntroPODPOTrainer(model(tiny_model, noise=0.05), args=args(EntroPODPOConfig, tmp_path, alpha=0.1),
                          train_dataset=pairs_to_dataset([(eps[0], eps[1])], tok), processing_class=tok)
    batch = collate(t)
    hidden = {}

    def keep(module, inputs, out):  # the final hidden states, kept with their gradient
        out.retain_grad()
        hidden["h"] = out

    hook = t.model.model.norm.register_forward_hook(keep)
    t.compute_loss(t.model, batch).backward()
    hook.remove()
    grad = hidden["h"].grad.norm(dim=-1)  # (rows, positions)
    target = torch.zeros_like(batch["completion_mask"])
    target[:, :-1] = batch["completion_mask"][:, 1:]  # position i scores token i+1
    assert (grad[target == 0] == 0).all()
    assert (grad[target == 1] > 0).all()
    tool_tokens = (batch["attention_mask"] == 1) & (batch["completion_mask"] == 0)
    assert tool_tokens[:, 30:].sum() > 5  # there are masked tokens after the prompt: the tool output

    with torch.no_grad():
        logp = torch.log_softmax(t.model(input_ids=batch["input_ids"]).logits[:, :-1], -1)
    token_logp = logp.gather(-1, batch["input_ids"][:, 1:, None])[..., 0]
    expected = (token_logp * batch["completion_mask"][:, 1:]).sum(-1)
    chosen, rejected = seq_logps(t, batch)
    torch.testing.assert_close(torch.cat([chosen, rejected]), expected, rtol=1e-5, atol=1e-4)


def test_kto_masks_cover_the_kl_sequences(tok, tiny_model, tmp_path):
    items = make_unpaired(EPISODES, seed=0)
    t = EntroPOKTOTrainer(model(tiny_model), args=args(EntroPOKTOConfig, tmp_path),
                          train_dataset=unpaired_to_dataset(items, tok), processing_class=tok)
    batch = collate(t)
    n = len(items)
    for row, (e, label) in enumerate(items):
        ids, mask = tokenize_episode(tok, e.messages)
        assert batch["completion_mask"][row, : len(ids)].tolist() == mask
        assert bool(batch["label"][row]) == label
        # the KL sequence of row i is prompt i + the completion of row i-1 (TRL's pairing), masked alike
        _, prev_mask = tokenize_episode(tok, items[(row - 1) % n][0].messages)
        k = mask.index(1)
        kl_mask = [0] * k + prev_mask[prev_mask.index(1):]
        assert batch["KL_completion_mask"][row, : len(kl_mask)].tolist() == kl_mask
        assert batch["KL_completion_mask"][row, len(kl_mask):].sum() == 0


# -- data builders -----------------------------------------------------------------------------------


def pairing_episodes():
    return [
        traj("p1", True, "2", think="short"),                                     # c1: shortest correct
        traj("p1", True, "2", think="a considerably longer way to the answer"),   # c2
        traj("p1", False, "3", think="x", reward=0.0),                            # i1
        traj("p1", False, "3", think="a long and confident wrong path", reward=0.2),  # i2: near miss, longest
        traj("p1", False, "3", think="y", reward=0.2),                            # i3: near miss
        traj("p2", True, "5"),                                                    # only correct: no pair
        traj("p3", False, "5"),                                                   # only incorrect: no pair
    ]


def test_pairing_strategies():
    eps = pairing_episodes()
    c1, c2, _, i2, i3 = eps[:5]
    for strategy in ("random", "all", "hardest"):
        pairs = make_pairs(eps, strategy, seed=3)
        assert pairs
        assert all(c.correct and not r.correct and c.problem_id == r.problem_id == "p1" for c, r in pairs)
        assert pairs == make_pairs(eps, strategy, seed=3)  # seeded
    assert len(make_pairs(eps, "random")) == 1
    some = make_pairs(eps, "random", max_pairs_per_problem=4, seed=0)
    assert len(some) == 4 and len({(id(c), id(r)) for c, r in some}) == 4
    assert len({(id(c), id(r)) for c, r in make_pairs(eps, "all")}) == 6  # every correct × incorrect
    capped = make_pairs(eps, "all", max_pairs_per_problem=3)
    assert {id(c) for c, _ in capped} == {id(c1), id(c2)} and len({id(r) for _, r in capped}) == 3  # balanced
    # shortest correct vs highest-reward (then longest) incorrect
    assert make_pairs(eps, "hardest") == [(c1, i2)]
    assert make_pairs(eps, "hardest", max_pairs_per_problem=5) == [(c1, i2), (c2, i3)]
    with pytest.raises(ValueError, match="pairing"):
        make_pairs(eps, "best")


def test_rejection_sampling_and_kto_labels():
    eps = pairing_episodes() + [traj("p1", True, "2", think="short")]  # a duplicate of c1
    kept = rejection_sample(eps)
    assert all(e.correct for e in kept) and len(kept) == 3  # c1, c2, p2 (duplicate dropped)
    assert len(rejection_sample(eps, per_problem=1)) == 2
    items = make_unpaired(eps, seed=0)
    assert len(items) == len(eps) and all(label == e.correct for e, label in items)
    assert items == make_unpaired(eps, seed=0) and items != make_unpaired(eps, seed=1)  # shuffled, seeded
    contrastive = make_unpaired(eps, contrastive_only=True)
    assert {e.problem_id for e, _ in contrastive} == {"p1"}
    capped = make_unpaired(eps, per_problem=1)
    assert sum(label for _, label in capped) == 2 and sum(not label for _, label in capped) == 2


def test_pairs_dataset_shares_the_chat_prompt(tok):
    c, r = traj("p1", True, "2"), traj("p1", False, "3", tool="```output\nerror\n```\n")
    row = pairs_to_dataset([(c, r)], tok)[0]
    assert row["prompt_ids"] == encode_chat(tok, c.messages[:2])
    for side, e in (("chosen", c), ("rejected", r)):
        ids, mask = tokenize_episode(tok, e.messages)
        assert row["prompt_ids"] + row[f"{side}_ids"] == ids
        assert [0] * len(row["prompt_ids"]) + row[f"{side}_policy_mask"] == mask
    with pytest.raises(ValueError, match="no preference pairs"):
        pairs_to_dataset([], tok)


# -- end to end --------------------------------------------------------------------------------------


def scored_episodes(n_problems=4):
    eps = []
    for k in range(n_problems):
        eps += [traj(f"q{k}", True, str(k)), traj(f"q{k}", True, str(k), think="check twice"),
                traj(f"q{k}", False, str(k + 1), tool="```output\nwrong\n```\n")]
    return eps


def test_train_preference_dpo_writes_final_and_resumes(tiny_model, tmp_path):
    data = tmp_path / "episodes.jsonl"
    append_jsonl(data, scored_episodes())
    cfg = PreferenceSettings(model=tiny_model, data=[str(data)], out=str(tmp_path / "run"), method="dpo",
                             alpha=0.05, beta=0.1, pairing="all", lr=1e-3, max_steps=2, batch_size=2,
                             save_steps=2, logging_steps=1, max_length=256)
    train_preference(cfg, show_progress=False)
    assert (tmp_path / "run" / "checkpoints" / "checkpoint-2").exists()
    final = train_preference(cfg.model_copy(update={"max_steps": 4}), show_progress=False)
    state = json.loads((tmp_path / "run" / "preference_state.json").read_text())
    assert state["resumed_from"].endswith("checkpoint-2") and state["global_step"] == 4
    assert state["pairs"] == 8  # 4 problems × 2 correct × 1 incorrect
    history = json.loads((tmp_path / "run" / "log_history.json").read_text())
    steps = [h["step"] for h in history if "loss" in h]
    assert steps == [1, 2, 3, 4]  # one history across the resume
    assert (final / "config.json").exists() and (final / "tokenizer_config.json").exists()
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(final).config.vocab_size > 0


def test_train_preference_kto(tiny_model, tmp_path):
    data = tmp_path / "episodes.jsonl"
    append_jsonl(data, scored_episodes())
    cfg = PreferenceSettings(model=tiny_model, data=[str(data)], out=str(tmp_path / "run"), method="kto",
                             alpha=0.05, lr=1e-3, max_steps=2, batch_size=3, logging_steps=1, max_length=256)
    final = train_preference(cfg, show_progress=False)
    state = json.loads((tmp_path / "run" / "preference_state.json").read_text())
    assert state["desirable"] == 8 and state["undesirable"] == 4 and state["global_step"] == 2
    assert (final / "config.json").exists()
    with pytest.raises(ValueError, match="batch_size"):
        PreferenceSettings(model=tiny_model, data=[str(data)], method="kto", batch_size=1)


# -- the entropy term raises entropy; the paper's parameterisation; the released EntroPO-KTO --------


def test_entropy_term_gradient_raises_policy_entropy(tiny_model, tok, tmp_path):
    """Gradient steps from π = π_ref on a toy batch raise the policy's entropy with α > 0 and leave it
    where it is with α = 0. The batch: one prompt, its four likeliest next tokens as one-token
    completions, each pair tied (preferred once each way), so the α = 0 gradient is zero and any change
    is the entropy term's. The policy is sharp (logits × 20, one token holds most of the mass), so the
    entropy is that of a next-token distribution with room to widen."""
    prompt = encode_chat(tok, [{"role": "user", "content": "Q"}])
    sharp = 20.0
    with torch.no_grad():
        logits = model(tiny_model, norm_scale=sharp)(torch.tensor([prompt])).logits[0, -1]
    top = [int(t) for t in logits.argsort(descending=True)[:4]]
    pairs = [(x, y) for x in top for y in top if x != y]
    ds = Dataset.from_dict({"prompt_ids": [prompt] * len(pairs), "chosen_ids": [[x] for x, _ in pairs],
                            "rejected_ids": [[y] for _, y in pairs], "chosen_policy_mask": [[1]] * len(pairs),
                            "rejected_policy_mask": [[1]] * len(pairs)})

    def entropy(m):
        with torch.no_grad():
            logp = torch.log_softmax(m(torch.tensor([prompt])).logits[0, -1], -1)
        return -(logp.exp() * logp).sum().item()

    after = {}
    for alpha in (0.0, 0.5):
        t = EntroPODPOTrainer(model(tiny_model, norm_scale=sharp), ref_model=model(tiny_model, norm_scale=sharp),
                              args=args(EntroPODPOConfig, tmp_path, alpha=alpha, per_device_train_batch_size=12),
                              train_dataset=ds, processing_class=tok)
        batch = collate(t)
        before = entropy(t.model)
        for _ in range(3):
            t.model.zero_grad()
            t.compute_loss(t.model, batch).backward()
            with torch.no_grad():
                for p in t.model.parameters():
                    p.sub_(5e-4 * p.grad)  # small steps: logits ×20 make the gradient large
        after[alpha] = entropy(t.model)
    assert before < 0.8 * math.log(4)  # sharp: far from spread over the four
    assert after[0.0] == pytest.approx(before, abs=1e-5)  # ties: DPO does not move
    assert after[0.5] > before + 0.5  # EntroPO spreads the mass (0.19 → 1.27 nats)


def test_paper_parameterisation_is_resolved_and_ambiguity_refused(caplog):
    s = PreferenceSettings(model="m", data=["d"], entro_alpha=0.11, pref_beta=0.1)
    assert (s.alpha, s.beta) == (pytest.approx(0.01), 0.1)  # the paper's settings are our α = 0.01
    assert PreferenceSettings(model="m", data=["d"], entro_alpha=0.1, pref_beta=0.2 / 2).alpha == 0  # = DPO
    same = PreferenceSettings(model="m", data=["d"], alpha=0.01, beta=0.1, entro_alpha=0.11, pref_beta=0.1)
    assert same.alpha == pytest.approx(0.01)  # both forms, agreeing: accepted
    for bad, msg in [({"entro_alpha": 0.11}, "needs both"), ({"pref_beta": 0.1}, "needs both"),
                     ({"alpha": 0.11, "entro_alpha": 0.11, "pref_beta": 0.1}, "disagree"),
                     ({"beta": 0.2, "entro_alpha": 0.11, "pref_beta": 0.1}, "disagree"),
                     ({"entro_alpha": 0.05, "pref_beta": 0.1}, "negative")]:
        with pytest.raises(ValueError, match=msg):
            PreferenceSettings(model="m", data=["d"], **bad)
    with caplog.at_level("WARNING"):  # the paper's number typed as ours: warned, with the mapping
        PreferenceSettings(model="m", data=["d"], alpha=0.11)
    assert "entro_alpha=0.11, pref_beta=0.1 is alpha=0.01" in caplog.text
    c = EntroPOKTOConfig(output_dir="o", entro_alpha=0.3, pref_beta=0.2, use_cpu=True, report_to="none")
    assert (c.alpha, c.beta) == (pytest.approx(0.1), 0.2)
    with pytest.raises(ValueError, match="disagree"):
        EntroPODPOConfig(output_dir="o", alpha=0.5, entro_alpha=0.11, pref_beta=0.1, report_to="none")
    with pytest.raises(ValueError, match="kto_form"):
        EntroPOKTOConfig(output_dir="o", kto_form="paper", report_to="none")


def test_released_kto_puts_the_entropy_only_in_the_reference_point(tiny_model, tok, tmp_path):
    """At π = π_ref (KL̂ = 0), with m = batch mean of log π_ref(y): the derived form's logit for a
    desirable y is α·(log π_ref(y) − m), the released form's is −α·m for every y (its per-example reward
    β·log(π/π_ref) is 0). Both are TRL's KTO at α = 0."""
    ds = unpaired_to_dataset(make_unpaired(EPISODES), tok)
    alpha, beta = 0.05, 0.1
    losses = {}
    for form, a in (("derived", alpha), ("released", alpha), ("derived", 0.0), ("released", 0.0)):
        t = EntroPOKTOTrainer(model(tiny_model), ref_model=model(tiny_model), processing_class=tok, train_dataset=ds,
                              args=args(EntroPOKTOConfig, tmp_path, alpha=a, beta=beta, kto_form=form))
        batch = collate(t)
        losses[form, a] = t.compute_loss(t.model, batch).item()
    ref, _ = seq_logps(t, batch)
    labels = batch["label"].bool()
    m = ref.mean()
    sign = torch.where(labels, 1.0, -1.0)  # desirable: 1 − σ(r − z₀); undesirable: 1 − σ(z₀ − r)
    derived = (1 - torch.sigmoid(sign * alpha * (ref - m))).mean().item()
    released = (1 - torch.sigmoid(sign * -alpha * m)).mean().item()
    assert losses["derived", alpha] == pytest.approx(derived, rel=1e-5)
    assert losses["released", alpha] == pytest.approx(released, rel=1e-5)
    assert abs(derived - released) > 1e-3
    assert losses["released", 0.0] == losses["derived", 0.0] == pytest.approx(0.5)
