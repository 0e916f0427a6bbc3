"""The ``kdlab`` command: Hydra glue only; the work happens in ``kdlab.runner.run``."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from kdlab.config import register_configs
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
    app()


if __name__ == "__main__":
    main()
