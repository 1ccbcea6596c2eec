"""The copying-first stage of organism pretraining (OrganismSpec.copy_warmup)."""

import json

import torch

import pytest
from pydantic import ValidationError

from reasonlab.organisms import (
    CopyWarmup,
    OrganismSpec,
    build_tokenizer,
    copy_accuracy,
    copy_warmup_documents,
    ensure_organism,
    spec_hash,
)

TEXTS = [f"Problem: how many subsets of [{a}, {b}, {c}] add up to {a + b}?\nAnswer: {a * b % 7}\n" for a in range(12)
         for b in range(6) for c in range(3)]


def test_no_copy_stage_keeps_the_old_cache_names():
    # hashes of main before copy_warmup existed: existing caches (and the tests' ones) stay valid
    assert spec_hash(OrganismSpec()) == "ae34a0424ff5"
    assert spec_hash(OrganismSpec(behavior_rate=0.3, layers=4, width=128, heads=4)) == "01b27ce93f89"
    assert spec_hash(OrganismSpec(copy_warmup=CopyWarmup(steps=0))) == "ae34a0424ff5"  # 0 steps = no stage
    with_stage = spec_hash(OrganismSpec(copy_warmup=CopyWarmup(steps=100)))
    assert with_stage != "ae34a0424ff5"
    assert with_stage != spec_hash(OrganismSpec(copy_warmup=CopyWarmup(steps=100, repeats=2)))
    assert with_stage == spec_hash(OrganismSpec(copy_warmup={"steps": 100}))  # from a recipe's dict
    with pytest.raises(ValidationError, match="min_len"):
        CopyWarmup(steps=10, min_len=9, max_len=4)


def test_copy_documents_are_what_the_docstring_says():
    tok = build_tokenizer(TEXTS, 300)
    cw = CopyWarmup(steps=1, min_len=3, max_len=7, repeats=3, top_tokens=10, documents=200)
    docs = copy_warmup_documents(tok, TEXTS, cw, seed=0)
    assert docs == copy_warmup_documents(tok, TEXTS, cw, seed=0)  # deterministic
    assert docs != copy_warmup_documents(tok, TEXTS, cw, seed=1)
    nl = tok.encode("\n", add_special_tokens=False)
    eot = tok.convert_tokens_to_ids("<|endoftext|>")
    counts = {}
    for enc in tok(TEXTS, add_special_tokens=False)["input_ids"]:
        for i in enc:
            counts[i] = counts.get(i, 0) + 1
    top = set(sorted((i for i in counts if "\n" not in tok.decode([i])), key=lambda i: (-counts[i], i))[:10])
    assert len(docs) == 200
    lengths = set()
    for d in docs:
        assert d[-1] == eot
        body = d[:-1]
        k = len(body) // 3 - len(nl)
        seq = body[:k]
        assert body == (seq + nl) * 3  # the same sequence three times, a line each
        assert 3 <= len(seq) <= 7 and set(seq) <= top and not any("\n" in tok.decode([i]) for i in seq)
        lengths.add(len(seq))
    assert lengths == set(range(3, 8))


class Copier(torch.nn.Module):
    """A fake model that predicts the token that followed the previous occurrence of the current one
    (a perfect copier); with ``prefix_token`` set, only when the input starts with that token (else it
    predicts token 49, never in the documents)."""

    device = torch.device("cpu")

    def __init__(self, prefix_token: int | None = None):
        super().__init__()
        self.prefix_token = prefix_token

    def forward(self, input_ids):
        ids = input_ids[0].tolist()
        logits = torch.zeros(1, len(ids), 50)
        copies = self.prefix_token is None or ids[0] == self.prefix_token
        for t, x in enumerate(ids):
            prev = [j for j in range(t) if ids[j] == x]
            logits[0, t, ids[prev[-1] + 1] if prev and copies else (0 if self.prefix_token is None else 49)] = 1.0
        return type("Out", (), {"logits": logits})


def test_copy_accuracy_scores_the_second_copy():
    docs = [[5, 6, 7, 1, 5, 6, 7, 1, 2], [8, 9, 1, 8, 9, 1, 2]]
    assert copy_accuracy(Copier(), docs, newline=[1]) == {"token": 1.0, "exact": 1.0}

    class Blind(Copier):
        def forward(self, input_ids):
            return type("Out", (), {"logits": torch.zeros(1, input_ids.shape[1], 50)})

    assert copy_accuracy(Blind(), docs, newline=[1]) == {"token": 0.0, "exact": 0.0}


def test_copy_stage_runs_before_the_corpus(tmp_path, organism_home):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    spec = OrganismSpec(name="copytiny", corpus=str(corpus), layers=1, width=32, heads=2, vocab_size=300, seq_len=32,
                        batch_size=4, steps=3, warmup=1, dtype="fp32",
                        copy_warmup=CopyWarmup(steps=4, batch_size=4, seq_len=24, documents=50, top_tokens=20, mix=0.5))
    lines = []
    path = ensure_organism(spec, log=lines.append)
    meta = json.loads((path / "reasonlab.json").read_text())
    stage = meta["copy_warmup"]
    assert set(stage) >= {"copy_before", "copy_after", "copy_final", "train_seconds"}
    assert 0 <= stage["copy_after"]["token"] <= 1
    assert any("copy warm-up, 4 steps" in s for s in lines)
    assert meta["organism"]["copy_warmup"]["steps"] == 4
    # mix: copy documents kept in the corpus stage (half as many as the corpus's documents)
    plain = OrganismSpec(**{**spec.model_dump(), "copy_warmup": None})
    assert spec_hash(plain) != spec_hash(spec)
    assert meta["corpus_tokens"] > json.loads((ensure_organism(plain, log=None) / "reasonlab.json").read_text())["corpus_tokens"]


def test_copy_accuracy_prefix_shifts_positions():
    # copies only when the document is preceded by token 0
    docs = [[5, 6, 7, 1, 5, 6, 7, 1, 2]]
    assert copy_accuracy(Copier(prefix_token=0), docs, newline=[1], prefix=[0]) == {"token": 1.0, "exact": 1.0}
    assert copy_accuracy(Copier(prefix_token=0), docs, newline=[1])["token"] == 0.0
