"""Corpus curation by cognitive behaviors (as the study did with OpenWebMath).

Classify every document of a corpus (JSONL file or Hugging Face dataset) with the local classifier
or the LLM judge, then write

    enriched.jsonl   the documents with the most behaviors (top ``top_fraction`` by total count,
                     at least ``min_total`` behaviors)
    control.jsonl    the same number of documents with the fewest behaviors (minimal-behavior control)
    stats.json       counts, mean behaviors per subset and per behavior, token-free length stats

Each output line is the input record plus a ``behaviors`` field. Documents longer than
``max_chars`` are classified on their first ``max_chars`` characters.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Iterable

from reasonlab.analysis.behaviors import BEHAVIORS, count_behaviors_local
from reasonlab.episode import read_jsonl, write_json_atomic


def load_corpus(source: str, text_field: str = "text", split: str = "train", limit: int | None = None) -> list[dict]:
    """Records from a JSONL path, or from a dataset name/folder via ``datasets.load_dataset``."""
    if Path(source).is_file():
        records = list(read_jsonl(source))
    else:
        import datasets

        records = [dict(r) for r in datasets.load_dataset(source, split=split)]
    if limit:
        records = records[:limit]
    bad = next((i for i, r in enumerate(records) if not isinstance(r.get(text_field), str)), None)
    if bad is not None:
        raise ValueError(f"{source}: record {bad + 1} has no string field {text_field!r} (use --text-field)")
    return records


def curate(
    records: list[dict],
    out: str | Path,
    *,
    text_field: str = "text",
    classify: Callable[[list[str]], list[dict[str, int | None]]] | None = None,
    top_fraction: float = 0.1,
    min_total: int = 1,
    max_chars: int = 8000,
) -> dict[str, Any]:
    if not 0 < top_fraction <= 0.5:
        raise ValueError("top_fraction must be in (0, 0.5]")
    texts = [r[text_field][:max_chars] for r in records]
    counts = classify(texts) if classify else [count_behaviors_local(t) for t in texts]
    scored = []
    for r, c in zip(records, counts):
        clean = {b: int(c.get(b) or 0) for b in BEHAVIORS}
        scored.append(({**r, "behaviors": clean}, sum(clean.values())))
    order = sorted(range(len(scored)), key=lambda i: (-scored[i][1], i))
    k = max(1, int(round(top_fraction * len(scored))))
    enriched = [scored[i][0] for i in order[:k] if scored[i][1] >= min_total]
    control = [scored[i][0] for i in reversed(order)][: len(enriched)]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _write(out / "enriched.jsonl", enriched)
    _write(out / "control.jsonl", control)
    stats = {
        "documents": len(records),
        "enriched": len(enriched),
        "control": len(control),
        "with_any_behavior": sum(t > 0 for _, t in scored),
        "mean_behaviors": {name: _means(subset) for name, subset in
                           (("corpus", [s for s, _ in scored]), ("enriched", enriched), ("control", control))},
        "mean_chars": {name: (sum(len(d[text_field]) for d in subset) / len(subset) if subset else 0)
                       for name, subset in (("enriched", enriched), ("control", control))},
    }
    write_json_atomic(out / "stats.json", stats)
    return stats


def _means(docs: list[dict]) -> dict[str, float]:
    if not docs:
        return {b: 0.0 for b in BEHAVIORS}
    return {b: sum(d["behaviors"][b] for d in docs) / len(docs) for b in BEHAVIORS}


def _write(path: Path, records: Iterable[dict]) -> None:
    tmp = path.with_suffix(".partial")
    with tmp.open("w") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    tmp.replace(path)
