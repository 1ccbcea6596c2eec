import pytest
from typer.testing import CliRunner

from reasonlab.cli import app
from reasonlab.config import ConfigError, EvalConfig, load_config


def test_unknown_field_names_it_and_allowed(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("task: countdown\nsampling:\n  temprature: 0.5\n")
    with pytest.raises(ConfigError) as e:
        load_config(EvalConfig, p)
    msg = str(e.value)
    assert "sampling.temprature: unknown field" in msg and "temperature" in msg and "max_new_tokens" in msg


def test_literal_and_range_errors(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("dtype: bf32\nn: 0\n")
    msg = str(pytest.raises(ConfigError, load_config, EvalConfig, p).value)
    assert "dtype: 'bf32' is not allowed; allowed: 'auto', 'bf16', 'fp16' or 'fp32'" in msg
    assert "n: Input should be greater than or equal to 1" in msg


def test_yaml_syntax_error_has_line(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("task: countdown\nsampling: [1, 2\nmodel: x\n")
    msg = str(pytest.raises(ConfigError, load_config, EvalConfig, p).value)
    assert "line 3" in msg and "not valid YAML" in msg
    p.write_text("- a\n- b\n")
    assert "must be a mapping" in str(pytest.raises(ConfigError, load_config, EvalConfig, p).value)


def test_overrides_beat_file(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("n: 4\nsampling:\n  temperature: 0.5\n")
    cfg = load_config(EvalConfig, p, {"n": 8, "sampling.max_new_tokens": 12, "limit": None})
    assert cfg.n == 8 and cfg.sampling.temperature == 0.5 and cfg.sampling.max_new_tokens == 12 and cfg.limit == 100


def test_cli_reports_bad_config_with_exit_2(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("modle: x\n")
    r = CliRunner().invoke(app, ["eval", "--config", str(p)])
    assert r.exit_code == 2
    assert "modle: unknown field" in r.output and "model" in r.output
    r = CliRunner().invoke(app, ["eval", "--task", "countdwn"])
    assert r.exit_code == 2 and "Did you mean 'countdown'" in r.output


def test_training_dtype_auto_is_bf16_only_where_the_hardware_runs_it(monkeypatch):
    """SFT, preference and RL configs take dtype 'auto': bf16 on a CPU with bf16 units (or a GPU),
    fp32 where bf16 is emulated (tens of times slower there); explicit values are kept."""
    import reasonlab.rollout.hf as hf
    from reasonlab.config import validate
    from reasonlab.train.preference import PreferenceSettings
    from reasonlab.train.rl.config import RLConfig
    from reasonlab.train.sft import SFTSettings

    for cls, extra in ((SFTSettings, {"model": "m", "data": ["d.jsonl"], "out": "o"}), (RLConfig, {"model": "m"}),
                       (PreferenceSettings, {"model": "m", "data": ["d.jsonl"], "out": "o"})):
        assert validate(cls, {**extra, "dtype": "auto"}, "cfg").dtype == "auto"
        with pytest.raises(ConfigError, match="dtype"):
            validate(cls, {**extra, "dtype": "bf32"}, "cfg")
    monkeypatch.setattr(hf.torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(hf, "cpu_has_fast_bf16", lambda: False)
    assert hf.train_dtype("auto") == "fp32" and hf.train_dtype("bf16") == "bf16"
    monkeypatch.setattr(hf, "cpu_has_fast_bf16", lambda: True)
    assert hf.train_dtype("auto") == "bf16" and hf.train_dtype("fp32") == "fp32"
