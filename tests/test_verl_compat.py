"""reasonlab's verl outputs through verl 0.9.1's own code, on a CPU: dataset, reward, tool, config.

verl is an optional install (install.sh's verl step: `verl==0.9.1 --no-deps` plus what its imports
need); without it these tests skip with the reason. Only the LLM is scripted (ToolAgentLoop's
server manager returns fixed text): verl's dataset class, reward loader, reward manager, tool
registry, tool agent loop, Hydra config and config validation are verl's own. No Ray.
"""

import asyncio
import logging
import os

import numpy as np
import pytest
import yaml

try:
    import torch
    import verl
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf
    from verl import DataProto
    from verl.experimental.agent_loop.agent_loop import DictConfigWrap, ToolListWrap
    from verl.experimental.agent_loop.tool_agent_loop import ToolAgentLoop
    from verl.tools.tool_registry import load_all_tools
    from verl.trainer.ppo.reward import get_custom_reward_fn, load_reward_manager
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config
    from verl.utils.dataset.rl_dataset import RLHFDataset
    from verl.workers.rollout.replica import TokenOutput
except Exception as e:  # ImportError, or a verl dependency that fails on import
    pytest.skip(f"verl 0.9.1 is not importable ({type(e).__name__}: {e}); install it with "
                "`bash install.sh` (its optional verl step) to run these tests", allow_module_level=True)

from reasonlab.export.verl import export_verl
from reasonlab.export.verl_config import _hydra_value, export_rl, study_rl_config, verl_overrides
from reasonlab.tasks import get_task
from reasonlab.train.rl.config import RLConfig

CONFIG_DIR = os.path.join(os.path.dirname(verl.__file__), "trainer", "config")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from reasonlab.models import create_tiny

    return str(create_tiny(tmp_path_factory.mktemp("tiny") / "m", tasks=("countdown",)))


@pytest.fixture(scope="module")
def tokenizer(tiny):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny)


def verl_config(overrides: dict):
    """verl's own ppo_trainer config with our overrides; Hydra rejects keys it does not know."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        return compose("ppo_trainer", overrides=[f"{k}={_hydra_value(v)}" for k, v in overrides.items()])


def assert_composed(overrides: dict, conf) -> None:
    for key, want in overrides.items():
        got = OmegaConf.select(conf, key)
        if OmegaConf.is_list(got):
            got = list(got)
        assert got == want, f"{key}: verl's config holds {got!r}, we wrote {want!r}"


# ----------------------------------------------------------------------------- data


@pytest.mark.parametrize("task,tools", [("countdown", None), ("gym/leg_counting", ["python"])])
def test_parquet_loads_in_verls_dataset(tmp_path, tokenizer, task, tools):
    paths = export_verl(task, tmp_path, n_train=12, n_test=4, seed=0, tools=tools)
    conf = verl_config(verl_overrides(RLConfig(model="m", task=task), data_dir=tmp_path))
    ds = RLHFDataset(conf.data.train_files, tokenizer, conf.data)
    assert len(ds) == 12  # none filtered as overlong
    problems = get_task(task).problems("train", 12, seed=0)
    for i in (0, 11):
        item, p = ds[i], problems[i]
        assert item["data_source"] == "reasonlab/" + task
        assert item["extra_info"]["problem_id"] == p.id
        assert item["raw_prompt"][-1]["content"] == p.question
        assert ("python" in item["raw_prompt"][0]["content"]) == bool(tools)
        reference = f"<answer>{p.metadata['solution'] if task == 'countdown' else p.answer}</answer>"
        from reasonlab.export.verl import compute_score

        gt = item["reward_model"]["ground_truth"]
        assert compute_score(item["data_source"], reference, gt, item["extra_info"]) == 1.0
    assert paths["train"].exists()


# ----------------------------------------------------------------------------- reward


def _batch(tokenizer, text, data_source, ground_truth, extra_info):
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return DataProto.from_dict(
        tensors={"prompts": torch.zeros(1, 3, dtype=torch.long), "responses": torch.tensor([ids]),
                 "attention_mask": torch.ones(1, 3 + len(ids), dtype=torch.long)},
        non_tensors={"data_source": np.array([data_source], dtype=object),
                     "reward_model": np.array([{"style": "rule", "ground_truth": ground_truth}], dtype=object),
                     "extra_info": np.array([dict(extra_info)], dtype=object)})


def test_reward_through_verls_loader_and_reward_manager(tmp_path, tokenizer, caplog):
    paths = export_verl("countdown", tmp_path, n_train=5, n_test=3, seed=0)
    conf = verl_config(verl_overrides(study_rl_config("ppo"), data_dir=tmp_path))
    import pandas as pd

    row = pd.read_parquet(paths["test"]).iloc[0]
    p = get_task("countdown").problems("test", 3, seed=0)[0]
    gt, extra = row.reward_model["ground_truth"], row.extra_info
    tz_gt = {"target": 24, "numbers": [2, 3, 4]}  # TinyZero's own row layout

    async def scores():
        manager = load_reward_manager(conf, tokenizer)  # verl's loader: our module by path + NaiveRewardManager
        cases = [(f"<think>x</think> <answer>{p.metadata['solution']}</answer>", "reasonlab/countdown", gt, extra),
                 ("<answer>1 + 1</answer>", "reasonlab/countdown", gt, extra),
                 ("<answer>(3 * 4) * 2</answer>", "countdown", tz_gt, {}),
                 ("<answer>3 * 4 + 2</answer>", "countdown", tz_gt, {}),
                 ("no answer", "countdown", tz_gt, {}),
                 ("<answer>3</answer>", "openai/gsm8k-verl-compat", "3", {})]  # a source no other test logs
        return type(manager).__name__, [(await manager.run_single(_batch(tokenizer, *c)))["reward_score"] for c in cases]

    with caplog.at_level(logging.ERROR, logger="reasonlab.export.verl"):
        name, got = asyncio.run(scores())
    assert name == "NaiveRewardManager"
    assert got == [1.0, pytest.approx(0.1), 1.0, pytest.approx(0.1), 0.0, 0.0]
    msg = " ".join(r.getMessage() for r in caplog.records)
    assert "'openai/gsm8k-verl-compat' is unknown" in msg and "reasonlab/<task>" in msg and "'countdown'" in msg
    # verl merges reward_kwargs and passes router arguments as keyword arguments: accepted, ignored
    fn = get_custom_reward_fn(conf)
    kw = {"reward_router_address": "127.0.0.1:1", "reward_model_tokenizer": None}
    assert fn(data_source="countdown", solution_str="<answer>2*3*4</answer>", ground_truth=tz_gt,
              extra_info={}, **kw) == 1.0


# ----------------------------------------------------------------------------- tool


def _scripted_server(tokenizer, turns):
    class Server:  # stands in for vLLM: returns the next scripted turn
        def __init__(self):
            self.request_ids = []

        async def generate(self, request_id, prompt_ids, sampling_params, **kwargs):
            self.request_ids.append(request_id)
            text = turns[len(self.request_ids) - 1]
            ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.convert_tokens_to_ids("<|im_end|>")]
            return TokenOutput(token_ids=ids, log_probs=[0.0] * len(ids))

    return Server()


def test_tool_through_verls_registry_and_tool_agent_loop(tmp_path, tiny, tokenizer):
    cfg = RLConfig(model=tiny, task="countdown", algorithm="grpo", train_pool=8, rollout={"tools": ["python"]},
                   loss={"kl_coef": 0.001})
    paths = export_rl(cfg, tmp_path, n_test=2)
    tool_cfg = yaml.safe_load(paths["tool_config"].read_text())
    tool_cfg["tools"][0]["config"]["timeout_s"] = 1.0
    paths["tool_config"].write_text(yaml.safe_dump(tool_cfg))
    conf = verl_config(yaml.safe_load(paths["overrides"].read_text()))
    tools = load_all_tools(conf.actor_rollout_ref.rollout.multi_turn.tool_config_path, None)  # verl's registry
    assert [type(t).__name__ for t in tools] == ["PythonSandboxTool"] and tools[0].name == "python"
    turns = ["<think>compute</think>\n```python\nx = 6 * 7\nprint(x)\n```\n",
             "```python\nprint(x + 1)\n```\n",
             "```python\nwhile True:\n    pass\n```\n",
             "<answer>6 * 7</answer>"]
    server = _scripted_server(tokenizer, turns)

    async def run():
        loop = ToolAgentLoop(trainer_config=DictConfigWrap(conf), server_manager=server, tokenizer=tokenizer,
                             processor=None, dataset_cls=RLHFDataset, data_config=DictConfigWrap(conf.data),
                             hf_model_type="llama", tools=ToolListWrap(tools))
        return await loop.run({"temperature": 1.0}, raw_prompt=[{"role": "user", "content": "6 * 7?"}])

    try:
        out = asyncio.run(run())
        assert tools[0].open_sessions == 1  # one session for the trajectory, kept across calls
    finally:
        tools[0].close()
    assert len(set(server.request_ids)) == 1 and len(server.request_ids) == 4
    text = tokenizer.decode(out.response_ids)
    tool_text = tokenizer.decode([t for t, m in zip(out.response_ids, out.response_mask) if m == 0])
    policy_text = tokenizer.decode([t for t, m in zip(out.response_ids, out.response_mask) if m == 1])
    assert "```output\n42\n```" in tool_text and "```output\n43\n```" in tool_text  # state persisted
    assert "timed out" in tool_text
    assert "```output" not in policy_text and "<answer>6 * 7</answer>" in policy_text  # tool output masked
    assert text.index("42") < text.index("43")


def test_tool_sessions_are_reaped_when_idle():
    from verl.tools.schemas import ToolResponse

    from reasonlab.export.verl_tool import PythonSandboxTool

    tool = PythonSandboxTool({"type": "native", "idle_timeout_s": 600, "max_sessions": 2, "timeout_s": 2.0})

    class Traj:
        def __init__(self, rid):
            self.request_id = rid

    async def call(rid, code):
        iid, _ = await tool.create()
        try:
            resp, reward, metrics = await tool.execute(iid, {"code": code}, agent_data=Traj(rid))
        finally:
            await tool.release(iid)
        assert isinstance(resp, ToolResponse)
        return resp.text

    try:
        assert "1" in asyncio.run(call("a", "v = 1\nprint(v)"))
        assert "2" in asyncio.run(call("b", "print(2)"))
        assert tool.open_sessions == 2
        asyncio.run(call("c", "print(3)"))  # over max_sessions: the least recently used ("a") goes
        assert tool.open_sessions == 2
        assert "NameError" in asyncio.run(call("a", "print(v)"))  # a fresh session for "a"
        tool.idle_timeout_s = 0.0  # now every other session counts as idle
        asyncio.run(call("d", "print(4)"))  # idle ones are reaped on the next call
        assert tool.open_sessions == 1
        assert "non-empty 'code'" in asyncio.run(call("d", "  "))
    finally:
        tool.close()
    with pytest.raises(ValueError, match="unknown key.*timeout"):
        PythonSandboxTool({"type": "native", "timeout": 3})


# ----------------------------------------------------------------------------- configs


def _validated(conf):
    validate_config(conf, use_reference_policy=need_reference_policy(conf), use_critic=need_critic(conf))
    return need_critic(conf), need_reference_policy(conf)


def test_study_configs_compose_strictly_and_turn_kl_on(tmp_path, tiny):
    ppo = verl_overrides(study_rl_config("ppo", model=tiny), data_dir=tmp_path, n_gpus=4)
    conf = verl_config(ppo)
    assert_composed(ppo, conf)
    assert _validated(conf) == (True, True)  # critic, and the reference model the KL needs
    assert conf.algorithm.use_kl_in_reward and conf.algorithm.adv_estimator == "gae"
    assert conf.reward.custom_reward_function.path.endswith("reasonlab_reward.py")
    assert conf.custom_reward_function.path is None  # the legacy key is not what we rely on
    without = {k: v for k, v in ppo.items() if k != "algorithm.use_kl_in_reward"}
    assert not need_reference_policy(verl_config(without))  # the old command: no reference, no KL
    cfg = study_rl_config("ppo", model=tiny)
    mean = cfg.model_copy(update={"loss": cfg.loss.model_copy(update={"kl_reward_norm": "mean"})})
    with pytest.raises(ValueError, match="kl_reward_norm"):  # no verl equivalent: refused, not dropped
        verl_overrides(mean, data_dir=tmp_path, n_gpus=4)

    grpo = verl_overrides(study_rl_config("grpo", model=tiny), data_dir=tmp_path, n_gpus=4)
    conf = verl_config(grpo)
    assert_composed(grpo, conf)
    assert _validated(conf) == (False, True)
    assert conf.actor_rollout_ref.actor.use_kl_loss and not conf.algorithm.use_kl_in_reward

    with pytest.raises(Exception, match="no_such_key"):
        verl_config({**grpo, "actor_rollout_ref.actor.no_such_key": 1})


def test_tool_grpo_config_composes(tmp_path, tiny):
    cfg = RLConfig(model=tiny, task="gym/leg_counting", algorithm="dr_grpo", train_pool=8,
                   rollout={"tools": ["python"], "n": 4, "prompts_per_step": 8}, optim={"minibatch_size": 16})
    paths = export_rl(cfg, tmp_path, n_test=2)
    ov = yaml.safe_load(paths["overrides"].read_text())
    conf = verl_config(ov)
    assert_composed(ov, conf)
    _validated(conf)
    mt = conf.actor_rollout_ref.rollout.multi_turn
    assert mt.enable and mt.format == "reasonlab_python" and mt.tool_config_path == str(paths["tool_config"].resolve())
    assert conf.actor_rollout_ref.rollout.agent.default_agent_loop == "tool_agent"
    assert conf.actor_rollout_ref.actor.ppo_mini_batch_size == 4  # 16 sequences = 4 prompts x n
    assert conf.algorithm.norm_adv_by_std_in_grpo is False
    assert "verl.trainer.main_ppo" in paths["command"].read_text()


def test_behaviors_study_on_verl_from_its_recipe(tmp_path, tiny):
    from typer.testing import CliRunner

    from reasonlab.cli import app

    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({
        "name": "beh", "bases": {"poor": tiny, "rich": tiny}, "conditions": ["none", "empty_cot"], "traces": 4,
        "seeds": [0],
        "task_args": {"min_numbers": 3, "max_numbers": 3}, "sft": {"epochs": 1, "batch_size": 2},
        "rl": {"algorithm": "ppo", "steps": 5, "train_pool": 16, "eval_limit": 4,
               "rollout": {"prompts_per_step": 8, "n": 4}, "optim": {"minibatch_size": 16, "micro_batch_size": 2},
               "loss": {"kl_coef": 0.001, "kl_in_reward": True, "kl_estimator": "k1"}}}))
    res = CliRunner().invoke(app, ["run", "countdown-behaviors", "--config", str(recipe), "--engine", "verl",
                                   "--out", str(tmp_path / "run"), "--n-gpus", "2"])
    assert res.exit_code == 0, res.output
    root = tmp_path / "run" / "verl"
    script = (root / "run_verl.sh").read_text()
    assert script.count("verl.trainer.main_ppo") == 2 and "accelerate launch --config_file accelerate_fsdp.yaml" in script
    assert "distributed_type: FSDP" in (root / "accelerate_fsdp.yaml").read_text()
    for c in ("none", "empty_cot"):
        ov = yaml.safe_load((root / "conditions" / c / "overrides.yaml").read_text())
        conf = verl_config(ov)
        assert_composed(ov, conf)
        assert conf.algorithm.use_kl_in_reward and conf.critic.model.path == conf.actor_rollout_ref.model.path
    assert ov["actor_rollout_ref.model.path"].endswith("conditions/empty_cot/sft/final")
    assert len((root / "conditions" / "empty_cot" / "traces.jsonl").read_text().splitlines()) == 4
    res = CliRunner().invoke(app, ["run", "entropo", "--preset", "gpu", "--engine", "verl"])
    assert res.exit_code != 0 and "no on-policy RL stage" in res.output
