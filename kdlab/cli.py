"""The ``kdlab`` command: Hydra glue only; the work happens in ``kdlab.runner.run``."""

from __future__ import annotations

import functools
import logging
import os
import sys
from pathlib import Path

import hydra
from hydra._internal.utils import run_and_report  # hydra-core 1.3 (pinned <1.4)
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from kdlab.config import register_configs
from kdlab.config_keys import composition_key_error
from kdlab.errors import ConfigError, DataError, ResourceError

log = logging.getLogger(__name__)
# Shipped inside the package so that a wheel or `pip install git+...` finds them; the
# top-level `configs` of a checkout is a link to this folder.
CONFIG_DIR = str(Path(__file__).resolve().parent / "configs")

register_configs()


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def app(cfg: DictConfig) -> float:
    from kdlab.runner import run  # heavy imports after Hydra has parsed the command line

    try:
        results = run(cfg)
    except (ConfigError, DataError, ResourceError, FloatingPointError) as e:
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            # Raised, not exited: Hydra records the failed job and runs the rest of the
            # sweep, then reports the error (tables show the job as a gap).
            log.error("kdlab: error: %s", e)
            raise
        # A user error: one clear message, no traceback.
        print(f"kdlab: error: {e}", file=sys.stderr)
        sys.exit(2)
    # Returned for sweepers (e.g. Optuna) that optimise the task's main metric (rank 0 only).
    return results["student"]["dev"][results["metric"]] if results else None


def main() -> None:
    """Run ``app``; an unknown key Hydra refuses while composing is reported like every other
    user error (one ``kdlab: error:`` line naming the valid keys, status 2), not with
    Hydra's advice to add it with ``+``. Every other error is reported by Hydra, as before."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1":  # the user asked for tracebacks
        app()
        return
    # Hydra reports an error itself and exits unless HYDRA_FULL_ERROR is set: set it so the
    # error reaches this function, which hands it back to Hydra's reporting when not ours.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        app()
    except Exception as e:
        problem = composition_key_error(e)
        if problem is not None:
            print(f"kdlab: error: {problem}", file=sys.stderr)
            sys.exit(2)
        del os.environ["HYDRA_FULL_ERROR"]
        run_and_report(functools.partial(_reraise, e))  # Hydra's own report, status 1
    finally:
        os.environ.pop("HYDRA_FULL_ERROR", None)


def _reraise(error: BaseException) -> None:
    raise error


if __name__ == "__main__":
    main()
