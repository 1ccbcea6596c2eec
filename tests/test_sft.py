"""SFT on Episodes through TRL: masks (multi-turn included), learning, resume."""

import json

import pytest

from reasonlab.episode import Episode, append_jsonl
from reasonlab.tasks import get_task
from reasonlab.train.sft import SFTSettings, episodes_to_dataset, tokenize_episode, train_sft


def trace_episodes(n=32):
    task = get_task("countdown")
    eps = []
    for p in task.problems("train", n, seed=0):
        sol = p.metadata["solution"]
        msgs = task.messages(p) + [{"role": "assistant", "content": f"<think>try {sol}</think> <answer>{sol}</answer>"}]
        eps.append(Episode("countdown", p.id, 0, msgs, correct=True))
    return eps


@pytest.fixture(scope="module")
def tok(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


def test_multi_turn_mask_layout(tok):
    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"},
            {"role": "assistant", "content": "let me run\n```python\nprint(2)\n```\n"},
            {"role": "tool", "content": "```output\n2\n```\n"},
            {"role": "assistant", "content": "<answer>2</answer>"}]
    ids, mask = tokenize_episode(tok, msgs)
    assert len(ids) == len(mask)
    text = lambda m: tok.decode([i for i, b in zip(ids, mask) if b == m])  # noqa: E731
    assert "```output" in text(0) and "<|im_start|>user" in text(0)
    policy = text(1)
    assert "print(2)" in policy and "<answer>2</answer>" in policy and "```output" not in policy
    assert policy.endswith("<|im_end|>") and mask[-1] == 1
    # the rendered prompt is exactly the agent loop's prompt
    from reasonlab.rollout.chat import encode_chat

    prompt = encode_chat(tok, msgs[:2])
    assert ids[: len(prompt)] == prompt and set(mask[: len(prompt)]) == {0}


def test_dataset_and_trl_labels(tok, tiny_model, tmp_path):
    ds = episodes_to_dataset(trace_episodes(4), tok, max_length=512)
    assert set(ds.column_names) == {"input_ids", "assistant_masks"}
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    tr = SFTTrainer(model=AutoModelForCausalLM.from_pretrained(tiny_model), train_dataset=ds, processing_class=tok,
                    args=SFTConfig(output_dir=str(tmp_path / "o"), use_cpu=True, report_to="none", max_length=512))
    row = tr.train_dataset[0]
    labels, mask = row["labels"], ds[0]["assistant_masks"]
    assert all((lab == -100) == (m == 0) for lab, m in zip(labels, mask))


def test_sft_learns_and_resumes(tiny_model, tmp_path):
    data = tmp_path / "traces.jsonl"
    append_jsonl(data, trace_episodes(32))
    cfg = SFTSettings(model=tiny_model, data=[str(data)], out=str(tmp_path / "sft"), max_steps=6, lr=3e-3,
                      batch_size=8, save_steps=3, logging_steps=1, max_length=256)
    train_sft(cfg, show_progress=False)
    assert (tmp_path / "sft" / "checkpoints" / "checkpoint-6").exists()
    cfg2 = cfg.model_copy(update={"max_steps": 24})
    final = train_sft(cfg2, show_progress=False)
    hist = json.loads((tmp_path / "sft" / "log_history.json").read_text())
    losses = [h["loss"] for h in hist if "loss" in h]
    steps = [h["step"] for h in hist if "loss" in h]
    state = json.loads((tmp_path / "sft" / "sft_state.json").read_text())
    assert state["resumed_from"].endswith("checkpoint-6") and state["global_step"] == 24
    assert steps == sorted(set(steps)) and steps[-1] == 24  # one history, no restart
    assert losses[-1] < losses[0] * 0.7, losses
    assert (final / "config.json").exists()
    # the fine-tuned model now writes the answer format
    from reasonlab.rollout.base import SamplingParams
    from reasonlab.rollout.chat import encode_chat
    from reasonlab.rollout.hf import HFBackend

    be = HFBackend(str(final), dtype="fp32", device="cpu")
    task = get_task("countdown")
    p = task.problems("test", 1)[0]
    s = be.generate([encode_chat(be.tokenizer, task.messages(p))], SamplingParams(temperature=0, max_new_tokens=40))[0][0]
    assert "answer>" in s.text or "think>" in s.text, s.text  # learned the tags of the format


def test_bad_data_errors(tiny_model, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        train_sft(SFTSettings(model=tiny_model, data=[str(tmp_path / "nope.jsonl")], out=str(tmp_path / "x")))
    p = tmp_path / "e.jsonl"
    append_jsonl(p, [Episode("t", "p", 0, [{"role": "user", "content": "q"}])])
    with pytest.raises(ValueError, match="no trainable episodes"):
        train_sft(SFTSettings(model=tiny_model, data=[str(p)], out=str(tmp_path / "y")))
