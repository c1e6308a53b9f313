"""The steps of the DVC pipeline (``dvc.yaml``), one command per stage.

    python -m eval.pipeline datasets --params params.yaml --env hopper
    python -m eval.pipeline train    --params params.yaml --task hopper-medium --seed 0 --stage behavior
    python -m eval.pipeline policy   --params params.yaml --task hopper-medium --seed 0 --variant srpo
    python -m eval.pipeline evaluate --params params.yaml --task hopper-medium --seed 0 --variant srpo
    python -m eval.pipeline report   --params params.yaml

Every knob comes from the profile's params file (``params.yaml`` for the default
profile, ``pipelines/<profile>/params.yaml`` for the others), read into
:class:`PipelineParams`; the file is validated before any work starts. Paths in it are
relative to the repository root, where DVC runs every stage.

Layout of a profile's outputs::

    <data_dir>/minari/srpo/<env>/<kind>-v0          generated datasets (Minari store), task = <env>-<kind>
    <run_dir>/<task>/seed<S>/behavior.pt, critic.pt  shared by all policy variants of the run
    <run_dir>/<task>/seed<S>/<variant>/policy.pt, evaluation.json
    <report_dir>/report.md, metrics.json, figures/, plots/
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import MISSING, dataclass, field
from pathlib import Path

import yaml

from srpo.config import PROFILES, TASKS


@dataclass(frozen=True)
class PipelineParams:
    """One profile of the pipeline: what to generate, train, evaluate and report."""

    profile: str
    data_dir: str
    run_dir: str
    report_dir: str
    generation: dict
    envs: list[str]
    kinds: list[str]
    seeds: list[int]
    train: dict
    variants: dict[str, dict]
    evaluation: dict
    report: dict
    datasets: dict[str, str] = field(default_factory=dict)  # task -> Minari id or hdf5 path; default: generated
    threads: int = 0
    device: str = "cpu"
    source: str = "params.yaml"

    def __post_init__(self) -> None:
        from eval.generate import GENERATION_PROFILES

        where = f"in {self.source}"
        if not self.envs or not self.kinds:
            raise ValueError(f"envs and kinds must be non-empty lists {where}; the tasks are ENV-KIND")
        unknown = [t for t in self.tasks if t not in TASKS]
        if unknown:
            raise ValueError(f"unknown task(s) {', '.join(unknown)} {where}; `srpo tasks` lists them")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be a non-empty list of distinct integers {where}, got {self.seeds}")
        if self.generation.get("profile") not in GENERATION_PROFILES:
            raise ValueError(f"generation.profile must be one of {', '.join(GENERATION_PROFILES)} {where}")
        if self.train.get("profile") not in PROFILES:
            raise ValueError(f"train.profile must be one of {', '.join(PROFILES)} {where}")
        if not self.variants:
            raise ValueError(f"variants must name at least one policy variant {where} (e.g. srpo: {{}})")
        if self.report.get("reference_variant") not in self.variants:
            raise ValueError(f"report.reference_variant must be one of the variants {list(self.variants)} {where}")
        if int(self.evaluation.get("episodes", 0)) < 1:
            raise ValueError(f"evaluation.episodes must be >= 1 {where}")

    @property
    def tasks(self) -> list[str]:
        """ENV-KIND for every env and kind: the pipeline's matrix (hopper-medium, ...)."""
        return [f"{env}-{kind}" for env in self.envs for kind in self.kinds]

    def run_path(self, task: str, seed: int) -> Path:
        return Path(self.run_dir) / task / f"seed{seed}"

    def variant_path(self, task: str, seed: int, variant: str) -> Path:
        return self.run_path(task, seed) / variant

    @property
    def minari_root(self) -> Path:
        return Path(self.data_dir) / "minari"

    def overrides(self, variant: str | None = None) -> dict[str, str]:
        """``--set`` overrides of a run: the profile's, then the variant's."""
        sets = {str(k): _as_override(v) for k, v in (self.train.get("overrides") or {}).items()}
        if variant is not None:
            if variant not in self.variants:
                raise ValueError(f"unknown variant {variant!r}; {self.source} defines {', '.join(self.variants)}")
            sets |= {str(k): _as_override(v) for k, v in (self.variants[variant] or {}).items()}
        return sets


def _as_override(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return "none" if value is None else str(value)


def load_params(path: str | Path) -> PipelineParams:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"params file {path} not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ValueError(f"{path} must be a YAML mapping of pipeline parameters")
    fields = PipelineParams.__dataclass_fields__
    required = [k for k, f in fields.items() if f.default is MISSING and f.default_factory is MISSING]
    missing = [k for k in required if k not in raw]
    if missing:
        raise ValueError(f"{path} lacks key(s) {', '.join(missing)}; params.yaml shows the full set")
    unknown = sorted(set(raw) - set(fields) - {"root", "params_file"})
    if unknown:
        raise ValueError(f"{path} has unknown key(s) {', '.join(unknown)}")
    return PipelineParams(**{k: raw[k] for k in fields if k in raw and k != "source"}, source=str(path))


def _setup(p: PipelineParams) -> None:
    import torch

    if p.threads:
        torch.set_num_threads(p.threads)
    # Minari reads the store's location from the environment on every call.
    os.environ["MINARI_DATASETS_PATH"] = str(p.minari_root.resolve())


def _dataset(p: PipelineParams, task: str):
    from eval.datasets import GENERATED, load_dataset

    return load_dataset(task, p.datasets.get(task, GENERATED))


def step_datasets(p: PipelineParams, env: str) -> None:
    from eval.generate import finished_cards, generate_env

    gen = p.generation
    if finished_cards(env, gen["profile"], gen["seed"], p.minari_root):
        print(f"{env}: datasets of generation profile {gen['profile']}, seed {gen['seed']} already present")
        return
    result = generate_env(env, gen["profile"], gen["seed"], p.minari_root, progress=sys.stderr.isatty())
    returns = result["cards"]["expert"]["policy_returns"]
    print(f"{env}: policy returns {returns}; SAC {result['sac_env_steps_per_s']:.0f} env-steps/s")


def _train(p: PipelineParams, task: str, seed: int, stage: str, variant: str | None) -> None:
    from srpo import artifacts
    from srpo.config import make_config
    from srpo.train import train

    cfg = make_config(task, p.train["profile"], seed, p.overrides(variant))
    offline = _dataset(p, task)
    out = p.run_path(task, seed) if variant is None else p.variant_path(task, seed, variant)
    result = train(cfg, offline.transitions, out, p.device, stages=(stage,), upstream=p.run_path(task, seed),
                   restart_on_change=True, progress=sys.stderr.isatty())
    artifacts.write_json(out / f"{stage}_metrics.json", {
        "task": task, "seed": seed, "variant": variant, "stage": stage, "config": cfg.to_dict(),
        "dataset": {"name": offline.transitions.name, "transitions": len(offline.transitions),
                    "fingerprint": offline.transitions.fingerprint()},
        "wall_s": result.wall_s[stage], "history": result.histories[stage],
    })


def step_train(p: PipelineParams, task: str, seed: int, stage: str) -> None:
    if stage not in ("behavior", "critic"):
        raise ValueError(f"the train step runs behavior or critic, got {stage!r}; the policy has its own step")
    _train(p, task, seed, stage, None)


def step_policy(p: PipelineParams, task: str, seed: int, variant: str) -> None:
    _train(p, task, seed, "policy", variant)


def step_evaluate(p: PipelineParams, task: str, seed: int, variant: str) -> None:
    import time

    from eval.checkpoints import load_policy
    from eval.references import ANTMAZE_REFERENCE
    from eval.rollout import EvaluationUnavailable, env_spec_for_task, evaluate, torch_policy
    from srpo import artifacts

    out = p.variant_path(task, seed, variant)
    pi, meta = load_policy(out, p.device)
    ev = p.evaluation
    record = {"task": task, "seed": seed, "variant": variant, "policy_step": meta["step"]}
    try:
        spec = env_spec_for_task(task)
    except EvaluationUnavailable as exc:
        artifacts.write_json(out / "evaluation.json", {**record, "skipped": str(exc)})
        print(exc, file=sys.stderr)
        return
    reference = _dataset(p, task).reference
    if spec.scoring == "success":
        reference = ANTMAZE_REFERENCE
    t0 = time.perf_counter()
    # Evaluation episodes are seeded apart from training: run seed S uses seeds base + 1000 S + i.
    result = evaluate(torch_policy(pi), spec, int(ev["episodes"]), int(ev["seed"]) + 1000 * seed,
                      int(ev.get("num_envs", 8)), reference)
    artifacts.write_json(out / "evaluation.json", {**record, **result.to_dict(), "wall_s": time.perf_counter() - t0})
    print(f"{task} seed {seed} {variant}: normalized {result.to_dict()['mean_normalized']}")


def step_report(p: PipelineParams) -> None:
    from eval.report import write_report

    path = write_report(p)
    print(f"report written to {path}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m eval.pipeline", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="step", required=True)

    def add(name: str, help_: str, *args: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_)
        sp.add_argument("--params", default="params.yaml", help="the profile's params file (default: %(default)s)")
        for a in args:
            sp.add_argument(f"--{a}", required=True, type=int if a == "seed" else str)
        return sp

    add("datasets", "generate the five D4RL-style datasets of one environment", "env")
    add("train", "train the behavior model or the IQL critic of one run", "task", "seed", "stage")
    add("policy", "extract one policy variant from a run's behavior model and critic", "task", "seed", "variant")
    add("evaluate", "roll out one policy variant; per-episode returns and normalized scores", "task", "seed", "variant")
    add("report", "statistics, tables and figures over every run -> report.md")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        p = load_params(args.params)
        _setup(p)
        kwargs = {k: v for k, v in vars(args).items() if k not in ("step", "params")}
        {"datasets": step_datasets, "train": step_train, "policy": step_policy, "evaluate": step_evaluate,
         "report": step_report}[args.step](p, **kwargs)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
