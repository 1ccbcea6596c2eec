import json

import pytest
import torch

from reasonlab.models import create_tiny, import_smollm2, load_gguf, resolve_model, smollm2_gguf_path


def test_create_tiny(tmp_path):
    path = create_tiny(tmp_path / "m", layers=3, width=32, heads=2, vocab_size=400)
    cfg = json.loads((path / "config.json").read_text())
    assert cfg["num_hidden_layers"] == 3 and cfg["hidden_size"] == 32 and cfg["model_type"] == "llama"
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    assert len(tok) <= 400
    ids = tok("Using the numbers [1, 2, 3], create an equation")["input_ids"]
    assert tok.decode(ids) == "Using the numbers [1, 2, 3], create an equation"
    assert len(ids) < 30  # BPE learned the task text
    rendered = tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False)
    assert rendered == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    AutoModelForCausalLM.from_pretrained(path)
    with pytest.raises(ValueError, match="divisible"):
        create_tiny(tmp_path / "bad", width=30, heads=4)


def test_resolve_model_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        resolve_model(str(tmp_path / "empty"))
    assert resolve_model("org/some-hub-model") == "org/some-hub-model"


def test_gguf_import_roundtrip(tmp_path):
    """The imported folder is plain (no quantization config) and generates exactly what the
    GGUF-loaded model generates."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = import_smollm2(tmp_path / "smol")
    cfg = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in cfg
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(out)
    assert getattr(model, "hf_quantizer", None) is None
    ref_model, ref_tok = load_gguf(smollm2_gguf_path(), dtype=torch.float32)
    msgs = [{"role": "user", "content": "What is 2 + 3?"}]
    ids = torch.tensor([tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True)["input_ids"]])
    ref_ids = torch.tensor([ref_tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True)["input_ids"]])
    assert ids.tolist() == ref_ids.tolist()
    kw = dict(max_new_tokens=12, do_sample=False, pad_token_id=tok.pad_token_id)
    a = model.generate(ids, attention_mask=torch.ones_like(ids), **kw)
    b = ref_model.generate(ref_ids, attention_mask=torch.ones_like(ref_ids), **kw)
    assert a.tolist() == b.tolist()
    assert len(tok.decode(a[0, ids.shape[1]:])) > 0
