"""vLLM generation backend (GPU), the same interface as :class:`reasonlab.rollout.hf.HFBackend`.

Optional: ``pip install -e ".[vllm]"`` on a CUDA machine. Token prompts in, samples with token ids
and per-token logprobs out. For on-policy RL the engine calls :meth:`VLLMBackend.sync_weights`
after each update so that rollouts come from the current policy (colocated: the trainer and vLLM
share the GPU; ``gpu_memory_utilization`` leaves room for training).

Logprobs: vLLM is asked for the sampled token's logprob (``logprobs=0``) after temperature scaling
(``logprobs_mode="processed_logprobs"`` where the installed vLLM supports it). The RL engine
recomputes old log-probs with the trainer's own forward pass anyway, so small numeric differences
between vLLM's kernels and the trainer's do not bias the ratio.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from reasonlab.rollout.base import Sample, SamplingParams

log = logging.getLogger(__name__)


class VLLMBackend:
    def __init__(
        self,
        model: str,
        *,
        dtype: str = "auto",
        gpu_memory_utilization: float = 0.4,
        max_model_len: int = 4096,
        tensor_parallel_size: int = 1,
        seed: int = 0,
        enable_prefix_caching: bool = True,
    ):
        try:
            import vllm
        except ImportError:
            raise ImportError('the vLLM backend needs vllm on a CUDA machine: pip install -e ".[vllm]"') from None
        from reasonlab.models import resolve_model

        path = resolve_model(model)
        kw: dict[str, Any] = dict(
            model=path,
            dtype={"auto": "auto", "bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}.get(dtype, dtype),
            gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len,
            tensor_parallel_size=tensor_parallel_size,
            seed=seed,
            enable_prefix_caching=enable_prefix_caching,
        )
        try:
            self.llm = vllm.LLM(**kw, logprobs_mode="processed_logprobs")
        except TypeError:  # older vLLM without logprobs_mode
            self.llm = vllm.LLM(**kw)
        self.tokenizer = self.llm.get_tokenizer()
        self._vllm = vllm

    def generate(
        self, prompts: list[list[int]], params: SamplingParams, progress: Callable[[int], None] | None = None
    ) -> list[list[Sample]]:
        v = self._vllm
        sp = v.SamplingParams(
            n=params.n,
            temperature=params.temperature,
            top_p=params.top_p,
            top_k=params.top_k if params.top_k > 0 else -1,
            max_tokens=params.max_new_tokens,
            stop=list(params.stop) or None,
            include_stop_str_in_output=True,
            seed=params.seed,
            logprobs=0,
        )
        try:
            from vllm.inputs import TokensPrompt

            inputs = [TokensPrompt(prompt_token_ids=p) for p in prompts]
        except ImportError:  # pragma: no cover - very old vLLM
            inputs = [{"prompt_token_ids": p} for p in prompts]
        outs = self.llm.generate(inputs, sp, use_tqdm=False)
        result = []
        for out in outs:
            group = []
            for o in out.outputs:
                ids = list(o.token_ids)
                lps = [lp[t].logprob if lp and t in lp else 0.0 for t, lp in zip(ids, o.logprobs or [{}] * len(ids))]
                if o.finish_reason == "length":
                    reason, stop = "length", None
                elif isinstance(o.stop_reason, str):
                    reason, stop = "stop", o.stop_reason
                else:
                    reason, stop = "eos", None
                group.append(Sample(ids, lps, o.text, reason, stop))
            result.append(group)
            if progress:
                progress(len(group))
        return result

    def sync_weights(self, model: Any) -> None:
        """Load the trainer's current weights into the vLLM engine (colocated, same process)."""
        state = ((k, p.detach()) for k, p in model.state_dict().items())
        engine = self.llm.llm_engine
        try:  # vLLM V0 / colocated executor
            target = engine.model_executor.driver_worker.worker.model_runner.model
        except AttributeError:
            try:
                target = engine.model_executor.driver_worker.model_runner.model
            except AttributeError:
                target = None
        if target is not None:
            target.load_weights(state)
        else:  # vLLM V1: run load_weights inside the worker(s)
            weights = [(k, p.detach().cpu()) for k, p in model.state_dict().items()]

            def _load(worker, weights=weights):
                worker.model_runner.model.load_weights(weights)

            self.llm.collective_rpc(_load)
        if hasattr(self.llm, "reset_prefix_cache"):
            self.llm.reset_prefix_cache()  # cached KV of old weights is stale
