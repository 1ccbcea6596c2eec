"""One place that keeps library chatter off the console (the CLI and the experiments' worker processes)."""

from __future__ import annotations

import logging
import warnings


def quiet_libraries() -> None:
    """No transformers progress bars or info logs; no deprecation notices the user cannot act on."""
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:  # pragma: no cover
        pass
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # transformers 5.2x renames the cache argument; the decoding loops pass the name every 4.x/5.x
    # release accepts, so the deprecation notice says nothing the user can act on
    warnings.filterwarnings("ignore", message=r".*`past_key_values` is deprecated", category=FutureWarning)
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"transformers(\..*)?$")  # renamed arguments
    warnings.filterwarnings("ignore", message=r".*`gradient_checkpointing` is deprecated", category=FutureWarning)
