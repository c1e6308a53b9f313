"""What a pipeline stage may reuse: finished checkpoints of this code and config, scratch folders.

Training outputs persist between DVC runs so that a killed stage resumes; these helpers decide,
from markers written before training, whether what is on disk was made by the current training
code and parameters (reuse it) or not (delete it, so the stage trains again).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict
from pathlib import Path
from types import ModuleType

import srpo
from srpo import artifacts
from srpo_bench import validation
from srpo_bench.eval import baselines
from srpo_bench.params import PipelineParams


def write_stage_metrics(
    out: Path,
    stage: str,
    task: str,
    seed: int,
    variant: str | None,
    cfg,
    data,
    history: list,
    wall_s: float,
    batched_seeds: int,
    **extra,
) -> None:
    artifacts.write_json(
        out / f"{stage}_metrics.json",
        {
            "task": task,
            "seed": seed,
            "variant": variant,
            "stage": stage,
            **extra,
            "config": cfg.to_dict(),
            "dataset": {
                "name": data.name,
                "transitions": len(data),
                "fingerprint": data.fingerprint(),
                "source": data.info.get("source"),  # its provenance: the evaluation environment version
            },
            # Seeds trained together share the wall time: each records its share, so that sums are totals.
            "wall_s": wall_s / batched_seeds,
            "batched_seeds": batched_seeds,
            "history": history,
        },
    )


def trained_earlier(out: Path, stage: str, cfg, data, **extra) -> bool:
    """Whether ``out`` holds a finished ``stage`` checkpoint, and its metrics, from a run of this config.

    Called after :func:`claim_for_current_code` (so the checkpoint is this code's): such a seed is
    reused, not retrained, and its metrics file - the wall time of the run that trained it, not the
    time this run took to load it - stands.
    """
    ckpt, metrics = out / f"{stage}.pt", out / f"{stage}_metrics.json"
    if not (ckpt.exists() and metrics.exists()):
        return False
    try:
        m = json.loads(metrics.read_text())
        done = bool(artifacts.load_torch(ckpt).get("done"))
    except (OSError, ValueError, RuntimeError):  # unreadable: the stage retrains or rewrites it
        return False
    same = (
        m.get("config") == json.loads(json.dumps(cfg.to_dict()))
        and m.get("dataset", {}).get("fingerprint") == data.fingerprint()
        and all(m.get(k) == json.loads(json.dumps(v)) for k, v in extra.items())
    )
    return done and same


def drop_other_seeds(parent: Path, seeds: list[int]) -> None:
    """Remove ``seed<S>`` folders of seeds no longer in the params from a stage's output folder."""
    keep = {f"seed{s}" for s in seeds}
    for d in parent.glob("seed*"):
        if d.is_dir() and d.name not in keep:
            shutil.rmtree(d)


def training_code_fingerprint(*packages: ModuleType) -> str:
    """A hash of the code that trains: every module of :mod:`srpo`, eval/baselines.py, and ``packages``'
    modules.

    Files are found from the imported modules, so the hash is the same in a checkout and an install.
    """
    digest = hashlib.sha256()
    folders = [Path(m.__file__).resolve().parent for m in (srpo, *packages)]
    files = [f for d in folders for f in sorted(d.rglob("*.py"))] + [Path(baselines.__file__).resolve()]
    for f in files:
        digest.update(f"{f.parent.name}/{f.name}".encode() + b"\0" + f.read_bytes())
    return digest.hexdigest()[:16]


def validation_scratch(p: PipelineParams, *parts: str) -> Path:
    """A validation stage's scratch folder (its checkpoints), emptied unless this code and these params made
    it.

    The scratch folders are not DVC outputs: they persist between runs so that a killed
    validation stage resumes. When DVC re-runs the stage because its code or params changed,
    the checkpoints there must not be reused (nor refused as another config's): a marker
    ``recipe.json`` names the code and params that filled the folder, written before training.
    """

    params = asdict(p)
    recipe = {
        "code": training_code_fingerprint(validation),
        "params": {k: params[k] for k in ("seeds", "train", "generation", "datasets", "validation")},
    }
    key = hashlib.sha256(json.dumps(recipe, sort_keys=True, default=str).encode()).hexdigest()[:16]
    work = p.validation_dir.joinpath("work", *parts)
    marker = work / "recipe.json"
    try:
        made_by = json.loads(marker.read_text()).get("recipe")
    except (OSError, ValueError, AttributeError):  # missing or corrupt: unknown maker
        made_by = None
    if made_by != key:
        if work.exists():
            print(f"{work} holds checkpoints of other code or params: starting it over", flush=True)
            shutil.rmtree(work)
        work.mkdir(parents=True)
        artifacts.write_json(marker, {"recipe": key})
    return work


def claim_for_current_code(out: Path, checkpoint: str, code: str) -> None:
    """Keep ``out/checkpoint`` only if this training code made it; else delete it, so the stage retrains.

    Training outputs persist so that a killed stage resumes, and a stage reuses a finished
    checkpoint whose config matches (a seed added to the params trains alone). But DVC
    also re-runs a stage when its code changed, and then the old checkpoints must not be
    reused. ``out/code.json`` names the code that writes the checkpoint, written before
    training starts, so a killed run of the same code still resumes.
    """

    marker = out / "code.json"
    try:
        made_by = json.loads(marker.read_text()).get("training_code")
    except (OSError, ValueError, AttributeError):  # missing or corrupt: the maker is unknown, so retrain
        made_by = None
    if made_by != code:
        for f in (out / checkpoint, out / f"{checkpoint}.next"):
            if f.exists():
                print(f"{f} was made by other training code: training this stage again", flush=True)
                f.unlink()
        out.mkdir(parents=True, exist_ok=True)
        artifacts.write_json(marker, {"training_code": code})
