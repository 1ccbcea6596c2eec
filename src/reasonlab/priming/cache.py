"""Primed models cached by content: the same base weights, the same priming data and the same SFT
settings give the same primed model, so an experiment primes a condition once per machine, and the
`cpu` preset's primed models ship with reasonlab like its organisms (``reasonlab/data/organisms``).

The key hashes what the SFT reads, not how it was described: the start model's weight files, every
data file's bytes (the traces as generated, so a change to the trace generator is a new key) and the
SFT settings (minus where they are written). A primed model is stored as
``$REASONLAB_HOME/models/primed/<condition>-<key>/`` (the SFT's final checkpoint and, when known, its
``competence.json``); a shipped one as ``reasonlab/data/organisms/primed-<condition>-<key>/``.
``REASONLAB_SHIPPED_ORGANISMS=0`` ignores the shipped ones, as it does for organisms.

Failure modes: a half-copied folder is never used (copies go to ``.partial`` and are renamed); a
start model without weight files (a hub name) hashes its name instead.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

KEEP = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
        "chat_template.jinja", "special_tokens_map.json", "competence.json")


def primed_key(start: str | os.PathLike, condition: str, data: list[str | os.PathLike], sft: dict[str, Any]) -> str:
    h = hashlib.sha256()
    h.update(condition.encode())
    p = Path(start)
    weights = sorted(p.glob("*.safetensors")) + sorted(p.glob("*.bin")) if p.is_dir() else []
    if weights:
        for f in weights:
            h.update(hashlib.sha256(f.read_bytes()).digest())
    else:
        h.update(str(start).encode())
    for f in data:
        h.update(hashlib.sha256(Path(f).read_bytes()).digest())
    settings = {k: v for k, v in sorted(sft.items()) if k not in ("out", "model", "data")}
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return h.hexdigest()[:12]


def cache_path(condition: str, key: str) -> Path:
    from reasonlab.models import models_dir

    return models_dir() / "primed" / f"{condition}-{key}"


def shipped_path(condition: str, key: str) -> Path:
    from reasonlab.organisms import shipped_dir

    return shipped_dir() / f"primed-{condition}-{key}"


def _copy(src: Path, dst: Path, names: tuple[str, ...] = KEEP) -> None:
    tmp = dst.with_name(dst.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name in names:
        if (src / name).exists():
            shutil.copy2(src / name, tmp / name)
    shutil.rmtree(dst, ignore_errors=True)
    os.replace(tmp, dst)


def find_primed(condition: str, key: str) -> tuple[Path, str] | None:
    """(folder, 'cached' | 'shipped') of a stored primed model, copying a shipped one into the cache; None if none."""
    from reasonlab.organisms import use_shipped

    c = cache_path(condition, key)
    if (c / "config.json").exists():
        return c, "cached"
    s = shipped_path(condition, key)
    if use_shipped() and (s / "config.json").exists():
        _copy(s, c)
        return c, "shipped"
    return None


def store_primed(final: str | os.PathLike, condition: str, key: str, competence: str | os.PathLike | None = None) -> Path:
    """Put a trained primed model (and its competence report) into the cache."""
    c = cache_path(condition, key)
    _copy(Path(final), c)
    if competence is not None and Path(competence).exists() and not (c / "competence.json").exists():
        shutil.copy2(competence, c / "competence.json")
    return c


def restore(src: Path, final: Path) -> None:
    """Copy a stored primed model into a run's ``sft/final`` (its competence report stays in the store)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    _copy(src, final, tuple(n for n in KEEP if n != "competence.json"))
