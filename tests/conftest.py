import os

import pytest

# Tests never touch the user's model folder or a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A 2-layer width-64 Llama with a BPE tokenizer trained on Countdown text (~1 s to make)."""
    from reasonlab.models import create_tiny

    return str(create_tiny(tmp_path_factory.mktemp("models") / "tiny", layers=2, width=64, seed=0))


@pytest.fixture(scope="session")
def tiny_backend(tiny_model):
    from reasonlab.rollout.hf import HFBackend

    return HFBackend(tiny_model, dtype="fp32", device="cpu", batch_size=8)


@pytest.fixture(scope="session")
def organism_home(tmp_path_factory):
    """A REASONLAB_HOME of the test session: organisms pretrained by one test are reused by the next."""
    home = tmp_path_factory.mktemp("reasonlab-home")
    mp = pytest.MonkeyPatch()
    mp.setenv("REASONLAB_HOME", str(home))
    yield home
    mp.undo()
