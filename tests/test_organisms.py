"""Pretrained model organisms (reasonlab.organisms): corpus, tokenizer, cache, competence."""

import json

import pytest

from reasonlab.analysis.behaviors import count_behaviors_local
from reasonlab.organisms import (
    OrganismSpec,
    competence_report,
    corpus_documents,
    ensure_organism,
    fact_table,
    is_heldout,
    load_corpus_file,
    organism_path,
    split_numbers,
)

# the ci preset's organism (recipes/countdown-behaviors-ci.yaml), pretrained once per test session and
# reused by the experiment's test (same name and fields, so the same cache folder)
CI = dict(layers=2, width=64, heads=2, vocab_size=1024, fact_max=12, countdown_docs=1500, fact_docs=600,
          seq_len=256, batch_size=16, steps=120, lr=5e-3, warmup=10)


@pytest.fixture(scope="session")
def ci_poor(organism_home):
    return ensure_organism(OrganismSpec(name="poor", behavior_rate=0.0, **CI), log=None)


def test_fact_table_and_heldout_split():
    table = fact_table(12)
    assert (7, "*", 8, 56) in table and (12, "/", 4, 3) in table and (3, "-", 5, -2) not in table
    held = [f for f in table if is_heldout(f, 0.1)]
    assert 0.06 < len(held) / len(table) < 0.14
    assert held == [f for f in fact_table(12) if is_heldout(f, 0.1)]  # fixed, not seed-dependent


def test_corpus_keeps_heldout_facts_out_and_rich_adds_behaviors():
    spec = OrganismSpec(behavior_rate=0.0, countdown_docs=300, fact_docs=200, fact_max=12)
    poor = corpus_documents(spec)
    rich = corpus_documents(spec.model_copy(update={"behavior_rate": 0.5}))
    held = {f"{a} {op} {b} = {c}" for a, op, b, c in fact_table(12) if is_heldout((a, op, b, c), 0.1)}
    lines = {s.strip(". ") for d in poor if "<answer>" not in d for s in d.replace("\n", ", ").replace(". ", ", ").split(", ")}
    assert not held & lines
    behav = lambda docs: sum(sum(count_behaviors_local(d).values()) > 0 for d in docs if "<answer>" in d)  # noqa: E731
    assert behav(poor) == 0
    assert 0.35 < behav(rich) / 300 < 0.65


def test_pretraining_is_cached_and_learns_arithmetic(ci_poor, organism_home):
    meta = json.loads((ci_poor / "reasonlab.json").read_text())
    assert meta["organism"]["behavior_rate"] == 0.0 and meta["final_loss"] < 2.0
    stamp = (ci_poor / "model.safetensors").stat().st_mtime_ns
    again = ensure_organism(OrganismSpec(name="poor", behavior_rate=0.0, **CI), log=None)
    assert again == ci_poor and (again / "model.safetensors").stat().st_mtime_ns == stamp  # reused
    assert organism_path(OrganismSpec(name="poor", behavior_rate=0.1, **CI)) != ci_poor  # content hash
    from transformers import AutoTokenizer

    assert split_numbers(AutoTokenizer.from_pretrained(ci_poor), 144) == []  # every number one token
    rep = competence_report(ci_poor, problems=8, n=2, max_new_tokens=64)
    # Stated competence of the ci organism (2 layers x 64, 120 steps, about a minute): it has begun to
    # learn the fact table (0.135 of seen facts, 0.067 of held-out ones when measured), far above an
    # untrained model of the same shape (chance is about 1/145). The cpu organism's figures (98% seen,
    # 65% held-out) are in the README; pretraining that long does not fit a test.
    assert rep["arith_seen"] >= 0.08, rep
    assert 0 <= rep["arith_heldout"] <= 1 and rep["samples"] == 16
    from reasonlab.models import create_tiny
    from reasonlab.organisms import arithmetic_accuracy, fact_table
    from transformers import AutoModelForCausalLM

    untrained = create_tiny(organism_home / "untrained", layers=2, width=64, heads=2, vocab_size=1024,
                            extra_texts=[" ".join(str(i) for i in range(145))] * 8)
    facts = [f for f in fact_table(12) if not is_heldout(f, 0.1)][:200]
    base = arithmetic_accuracy(AutoModelForCausalLM.from_pretrained(untrained), AutoTokenizer.from_pretrained(untrained), facts)
    assert base < 0.03 < rep["arith_seen"]


def test_corpus_file_errors_name_the_line(tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_text('{"text": "a"}\n{"txt": "b"}\n')
    with pytest.raises(ValueError, match=r"c.jsonl:2: .*'text'"):
        load_corpus_file(p)
    p.write_text('{"text": "a"}\nnot json\n')
    with pytest.raises(ValueError, match=r"c.jsonl:2"):
        load_corpus_file(p)


def test_competence_cli(ci_poor):
    from typer.testing import CliRunner

    from reasonlab.cli import app

    r = CliRunner().invoke(app, ["models", "competence", str(ci_poor), "--problems", "2", "--n", "1", "--json",
                                 "--max-new-tokens", "32"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout[r.stdout.index("{"):])
    assert rep["samples"] == 2 and 0 <= rep["arith_heldout"] <= 1
    r = CliRunner().invoke(app, ["models", "pretrain", "medium"])
    assert r.exit_code == 2 and "poor, rich" in r.output
    # a range with fewer test problems than asked for: a one-line error that names the ranges, no traceback
    r = CliRunner().invoke(app, ["models", "competence", str(ci_poor), "--problems", "64", "--n", "1",
                                 "--task-arg", "min_numbers=3", "--task-arg", "max_numbers=3",
                                 "--task-arg", "number_range=[1,10]", "--task-arg", "target_range=[31,60]"])
    assert r.exit_code == 2 and "target_range [31, 60]" in r.output and "ask for at most" in r.output
    assert "Traceback" not in r.output


def test_curated_subsets_differ_in_behaviors_as_intended(tmp_path):
    """The curation arm's mixed corpus, split by the local classifier: the enriched subset carries the
    behaviors, the minimal one none, and both have the same number of documents."""
    from reasonlab.analysis.curate import curate

    docs = corpus_documents(OrganismSpec(behavior_rate=0.3, countdown_docs=300, fact_docs=0, fact_max=12))
    stats = curate([{"text": t} for t in docs], tmp_path, top_fraction=0.3)
    enriched = sum(stats["mean_behaviors"]["enriched"].values())
    minimal = sum(stats["mean_behaviors"]["control"].values())
    assert stats["enriched"] == stats["control"] > 50
    assert enriched >= 3 and minimal == 0
    assert all(stats["mean_behaviors"]["enriched"][b] > 0 for b in stats["mean_behaviors"]["enriched"])


def test_trace_phrasing_keeps_old_cache_names_and_is_validated():
    from reasonlab.organisms import OrganismSpec, spec_hash

    base = OrganismSpec(behavior_rate=0.3)
    assert spec_hash(base) == spec_hash(OrganismSpec(behavior_rate=0.3, trace_phrasing="standard"))
    assert spec_hash(base) != spec_hash(OrganismSpec(behavior_rate=0.3, trace_phrasing="organism"))
    with pytest.raises(ValueError, match="unknown trace_phrasing 'klingon'"):
        OrganismSpec(trace_phrasing="klingon")


def test_corpus_content_not_path_names_the_organism(tmp_path):
    from reasonlab.organisms import OrganismSpec, spec_hash

    a, b, c = tmp_path / "a" / "corpus.jsonl", tmp_path / "b" / "corpus.jsonl", tmp_path / "c" / "corpus.jsonl"
    for p, text in ((a, "one"), (b, "one"), (c, "two")):
        p.parent.mkdir()
        p.write_text('{"text": "%s"}\n' % text)
    h = lambda p: spec_hash(OrganismSpec(corpus=str(p)))  # noqa: E731
    assert h(a) == h(b) != h(c)  # the same corpus in another run directory reuses the cached organism


def test_replay_documents_come_from_the_base_corpus_without_chat_prompts(ci_poor, tmp_path):
    """Priming replay: the organism's own pretraining documents (facts, one-line Countdown direct
    answers), never a chat-layout prompt, deterministic for a seed, one assistant message each."""
    from reasonlab.organisms import replay_documents, replay_episodes
    from reasonlab.train.sft import tokenize_episode

    spec = OrganismSpec(**json.loads((ci_poor / "reasonlab.json").read_text())["organism"])
    corpus = set(corpus_documents(spec))
    docs = replay_documents(ci_poor, 200, seed=0)
    assert len(docs) == 200 and set(docs) <= corpus
    assert not any(d.startswith("<|im_start|>") for d in docs)  # chat prompts keep getting traces
    assert any(" = " in d and "<answer>" not in d for d in docs)  # arithmetic facts
    assert any(d.startswith("Using the numbers") for d in docs)  # direct answers, one-line layout
    assert docs == replay_documents(ci_poor, 200, seed=0) and docs != replay_documents(ci_poor, 200, seed=1)
    eps = replay_episodes(ci_poor, 3, seed=0)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(ci_poor)
    ids, mask = tokenize_episode(tok, eps[0].messages)
    assert eps[0].completion == docs[0] and all(mask)  # the whole document is trained on
    with pytest.raises(ValueError, match="not a pretrained organism"):
        replay_documents(tmp_path, 3)


def test_curation_replay_mixes_the_same_base_documents_into_both_subsets(ci_poor, tmp_path):
    """curation.replay: each arm continues pretraining on its subset plus the same replayed documents
    of the base's own corpus, so the two arms differ only in the curated subset."""
    from pathlib import Path

    import yaml

    from reasonlab.experiments.behaviors import BehaviorsRecipe, Progress, ensure_curated
    from reasonlab.organisms import load_corpus_file

    ci = yaml.safe_load((Path(__file__).resolve().parents[1] / "recipes" / "countdown-behaviors-ci.yaml").read_text())
    # a base spec with a copy warm-up: continued pretraining must not repeat it (the base has had it)
    organism = {**ci.get("organism", {}), "copy_warmup": {"steps": 3, "batch_size": 2, "seq_len": 32, "mix": 0.2}}
    recipe = BehaviorsRecipe(**{**ci, "organism": organism, "conditions": ["none", "curated_enriched", "curated_minimal"],
                                "curation": {"documents": 100, "steps": 2, "replay": 20}})
    paths = ensure_curated(recipe, tmp_path, str(ci_poor), Progress(1, enabled=False))
    d = tmp_path / "curation"
    mixed = {c: load_corpus_file(str(d / f"{c}+replay20.jsonl")) for c in ("enriched", "control")}
    from collections import Counter

    extra = {}
    for c, docs in mixed.items():
        subset = Counter(load_corpus_file(str(d / f"{c}.jsonl")))
        assert not subset - Counter(docs)  # the whole subset is in
        extra[c] = Counter(docs) - subset  # (a corpus may hold a document twice: multisets)
    assert extra["enriched"] == extra["control"] and sum(extra["enriched"].values()) == 20
    assert set(paths) == {"curated_enriched", "curated_minimal"}
    assert all((Path(p) / "config.json").exists() for p in paths.values())
    for p in paths.values():
        meta = json.loads((Path(p) / "reasonlab.json").read_text())
        assert meta["organism"]["copy_warmup"] is None and "copy_warmup" not in meta
        assert meta["organism"]["init_from"] == str(ci_poor) and meta["organism"]["steps"] == 2


def _preset_specs():
    """(preset, base, spec) of every preset that pretrains a Countdown organism."""
    from reasonlab.config import load_config
    from reasonlab.experiments import entropo
    from reasonlab.experiments.behaviors import BehaviorsRecipe, organism_spec

    for preset in ("cpu", "full"):
        r = load_config(BehaviorsRecipe, f"recipes/countdown-behaviors-{preset}.yaml", {})
        for base in ("poor", "rich"):
            yield f"countdown-behaviors-{preset}", base, organism_spec(r, base)
        r = load_config(entropo.EntroPORecipe, f"recipes/entropo-{preset}.yaml", {})
        yield f"entropo-{preset}", "base_model", entropo.organism_spec(r)


def test_shipped_organisms_are_the_presets_own(tmp_path, monkeypatch):
    """Each preset's organism ships under the name its spec hashes to, and the shipped folder was
    made from that very spec (its reasonlab.json): a preset or CORPUS_VERSION change without
    remaking the shipped organism fails here instead of silently pretraining for 21 minutes."""
    from reasonlab.organisms import organism_source, shipped_dir, spec_hash

    monkeypatch.setenv("REASONLAB_HOME", str(tmp_path))  # nothing cached
    specs = list(_preset_specs())  # a base that continues another's pretraining names it by its weights
    for preset, base, spec in specs:
        # shipped (the parent of a continued base has been copied into the cache by then)
        assert organism_source(spec) in ("shipped", "cached"), f"{preset} {base}: {organism_path(spec).name}"
        assert (shipped_dir() / organism_path(spec).name).is_dir(), f"{preset} {base}: {organism_path(spec).name} is not shipped"
        meta = json.loads((shipped_dir() / organism_path(spec).name / "reasonlab.json").read_text())
        made = dict(meta["organism"])
        if made["init_from"]:  # recorded by the shipped parent's folder name
            assert (shipped_dir() / made["init_from"]).is_dir(), f"{preset} {base}: parent {made['init_from']} not shipped"
            made["init_from"] = str(shipped_dir() / made["init_from"])
        assert meta["hash"] == spec_hash(spec) == spec_hash(OrganismSpec(**made)), preset
    monkeypatch.setenv("REASONLAB_SHIPPED_ORGANISMS", "0")
    monkeypatch.setenv("REASONLAB_HOME", str(tmp_path / "empty"))
    assert {organism_source(s) for _, _, s in specs} == {"pretrain"}


def test_cpu_presets_primed_models_are_shipped_under_their_keys(tmp_path, monkeypatch):
    """The cpu preset's three primed models ship under the key of the traces the preset generates today
    and its SFT settings (reasonlab.priming.cache): a change to the trace generator, the preset's
    priming or SFT settings, or the shipped poor base fails here instead of silently training 26 minutes."""
    from transformers import AutoTokenizer

    from reasonlab.config import load_config
    from reasonlab.episode import append_jsonl
    from reasonlab.experiments.behaviors import BehaviorsRecipe, organism_spec
    from reasonlab.organisms import shipped_dir
    from reasonlab.priming.cache import find_primed, primed_key
    from reasonlab.priming.traces import generate_traces
    from reasonlab.train.sft import SFTSettings

    monkeypatch.setenv("REASONLAB_HOME", str(tmp_path))
    r = load_config(BehaviorsRecipe, "recipes/countdown-behaviors-cpu.yaml", {})
    start = shipped_dir() / organism_path(organism_spec(r, "poor")).name
    tok = AutoTokenizer.from_pretrained(start)
    for c in ("all_strategies", "empty_cot", "no_positive"):
        eps = generate_traces(c, r.traces, seed=r.priming_seed, task_args=r.task_args, tokenizer=tok,
                              paraphrase=r.trace_phrasing, max_detours=r.trace_max_detours,
                              restart_only=r.trace_restart_only, search=r.trace_search)
        traces = tmp_path / f"{c}.jsonl"
        append_jsonl(traces, eps)
        sft = SFTSettings.model_validate({**r.sft, "model": str(start), "data": [str(traces)], "out": "x",
                                          "seed": r.priming_seed})
        key = primed_key(start, c, [traces], sft.model_dump(mode="json"))
        found = find_primed(c, key)
        assert found is not None and found[1] == "shipped", f"{c}: primed-{c}-{key} is not shipped"
        rep = json.loads((found[0] / "competence.json").read_text())
        assert rep["accuracy"] > 0.1 and rep["format_rate"] > 0.5, (c, rep)  # it solves problems before RL
    assert find_primed(c, key)[1] == "cached"  # copied into the cache the first time
    monkeypatch.setenv("REASONLAB_HOME", str(tmp_path / "other"))
    monkeypatch.setenv("REASONLAB_SHIPPED_ORGANISMS", "0")
    assert find_primed(c, key) is None  # primed here instead


def test_shipped_organism_is_copied_not_pretrained_and_is_competent(tmp_path, monkeypatch):
    """The cpu preset's behavior-poor base comes from the shipped weights in a second and has a
    base model's competencies: arithmetic beyond the facts it saw, Countdown solved at step 0."""
    import time

    from reasonlab.config import load_config
    from reasonlab.experiments.behaviors import BehaviorsRecipe, organism_spec
    from reasonlab.organisms import organism_source

    monkeypatch.setenv("REASONLAB_HOME", str(tmp_path))
    r = load_config(BehaviorsRecipe, "recipes/countdown-behaviors-cpu.yaml", {})
    spec = organism_spec(r, "poor")
    lines: list[str] = []
    t0 = time.time()
    path = ensure_organism(spec, log=lines.append)
    assert time.time() - t0 < 10 and not lines  # copied, not pretrained (that logs every stage)
    assert path == organism_path(spec) and organism_source(spec) == "cached"
    rep = competence_report(path, task_args=r.task_args, problems=32, n=4, fact_max=20)
    assert rep["arith_heldout"] > 0.4 and rep["arith_seen"] > 0.95
    assert rep["accuracy"] > 0.03 and rep["reads_numbers"] > 0.5


@pytest.mark.slow
def test_code_interpreter_cpu_preset_organism_is_shipped(tmp_path, monkeypatch):
    """The code-interpreter organism's name hashes its corpus (written with the sandbox, ~40 s)."""
    from reasonlab.config import load_config
    from reasonlab.experiments.codeinterp import CodeInterpreterRecipe, base_spec
    from reasonlab.organisms import organism_source

    monkeypatch.setenv("REASONLAB_HOME", str(tmp_path / "home"))
    r = load_config(CodeInterpreterRecipe, "recipes/code-interpreter-cpu.yaml", {})
    spec = base_spec(r, tmp_path)
    assert organism_source(spec) == "shipped", organism_path(spec).name
