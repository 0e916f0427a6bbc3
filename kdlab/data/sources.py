"""Where a split's rows come from, tried in this order.

With a data dir ``D`` (``dataset.data_dir``, by default ``$KDLAB_DATA_DIR``):

1. the original-format file ``D/<benchmark>/<DIR>/<file>``, e.g. ``D/glue/SST-2/dev.tsv``
   or ``D/superglue/WiC/val.jsonl``;
2. a copy saved by ``datasets``, in ``D/<benchmark>/<DIR>/`` or ``D/<benchmark>/<config>/``
   (``<config>`` is the hub config name, e.g. ``sst2``): a ``DatasetDict.save_to_disk``
   directory (``dataset_dict.json``), a ``Dataset.save_to_disk`` directory ``<split>/``,
   or ``<split>.parquet`` / ``<split>-*.parquet`` / ``<split>.arrow`` / ``<split>-*.arrow``
   with the hub's columns and label ids;
3. nothing found: ``DataError`` naming the expected files.

Without a data dir, the Hugging Face hub through ``datasets.load_dataset``.
Every source yields rows with the hub's field names and label ids.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Tuple

from kdlab.data.readers import Row
from kdlab.data.tasks import TaskSpec
from kdlab.errors import DataError


def task_dirs(spec: TaskSpec, data_dir: Path) -> List[Path]:
    root = data_dir / spec.benchmark
    return [root / spec.dirname] + (
        [root / spec.hub_config] if spec.hub_config != spec.dirname else []
    )


def original_file(spec: TaskSpec, split: str, data_dir: Path) -> Path:
    return data_dir / spec.benchmark / spec.dirname / spec.split_file(split).filename


def find_saved_copy(spec: TaskSpec, split: str, data_dir: Path) -> Optional[Tuple[str, List[Path]]]:
    """The first ``datasets``-saved copy of ``split`` under the task's dirs: (kind, paths)."""
    for d in task_dirs(spec, data_dir):
        if (d / "dataset_dict.json").is_file():
            return "dataset_dict", [d]
        if (d / split / "state.json").is_file():
            return "dataset", [d / split]
        for ext in ("parquet", "arrow"):
            whole = d / f"{split}.{ext}"
            files = [whole] if whole.is_file() else sorted(d.glob(f"{split}-*.{ext}"))
            if files:
                return ext, files
    return None


def read_saved_copy(spec: TaskSpec, split: str, kind: str, paths: List[Path]) -> List[Row]:
    import datasets

    if kind == "dataset_dict":
        dd = datasets.load_from_disk(str(paths[0]))
        if split not in dd:
            raise DataError(
                f"{paths[0]}: the saved DatasetDict has no split {split!r} (it has {', '.join(dd)}); "
                f"{spec.name} expects splits named {', '.join(spec.splits)}."
            )
        ds = dd[split]
    elif kind == "dataset":
        ds = datasets.load_from_disk(str(paths[0]))
    elif kind == "parquet":
        ds = datasets.Dataset.from_parquet([str(p) for p in paths])
    else:
        ds = datasets.concatenate_datasets([datasets.Dataset.from_file(str(p)) for p in paths])
    return ds.to_list()


def read_hub(spec: TaskSpec, split: str) -> List[Row]:
    """The hub copy (``datasets.load_dataset``); needs network access or a warm HF cache."""
    import datasets

    split_file = spec.split_file(split)  # an unknown split is a ConfigError before any download
    if not split_file.on_hub:
        raise DataError(
            f"{spec.name} split {split!r} ({split_file.filename}) is not on the Hugging Face hub; "
            f"set dataset.data_dir (or KDLAB_DATA_DIR) to a directory holding "
            f"{spec.benchmark}/{spec.dirname}/{split_file.filename}."
        )
    try:
        ds = datasets.load_dataset(spec.hub_path, spec.hub_config, split=split)
    except Exception as e:  # network, missing split, ...: say what was tried and what else works
        raise DataError(
            f"could not load {spec.name} split {split!r} from the Hugging Face hub "
            f"(datasets.load_dataset({spec.hub_path!r}, {spec.hub_config!r}, split={split!r})): "
            f"{e}. Without network access, set dataset.data_dir (or KDLAB_DATA_DIR) to a "
            f"directory holding {spec.benchmark}/{spec.dirname}/{spec.split_file(split).filename}."
        ) from e
    return ds.to_list()


def read_rows(
    spec: TaskSpec, split: str, data_dir: Optional[str], on_bad_row: str
) -> Tuple[List[Row], str]:
    """The rows of ``split`` and a description of where they came from."""
    if data_dir is None:
        return read_hub(spec, split), f"hub {spec.hub_path}/{spec.hub_config}"
    root = Path(data_dir).expanduser()
    split_file = spec.split_file(split)
    if not root.is_dir():
        raise DataError(
            f"data dir {root} does not exist (dataset.data_dir / KDLAB_DATA_DIR). Expected "
            f"{root}/{spec.benchmark}/{spec.dirname}/{split_file.filename}."
        )
    path = original_file(spec, split, root)
    if path.is_file():
        return split_file.format.read(path, spec.labels(split), on_bad_row), str(path)
    saved = find_saved_copy(spec, split, root)
    if saved is not None:
        kind, paths = saved
        return read_saved_copy(spec, split, kind, paths), f"saved {kind} copy {paths[0]}"
    dirs = " or ".join(str(d) for d in task_dirs(spec, root))
    raise DataError(
        f"no data for {spec.name} split {split!r}: expected {path} "
        f"({_layout(spec)}), or a copy saved by datasets in {dirs} "
        f"(save_to_disk, {split}.parquet or {split}.arrow)."
    )


def _layout(spec: TaskSpec) -> str:
    if spec.benchmark == "glue":
        return "GLUE TSV as distributed"
    return "SuperGLUE JSON lines as distributed"
