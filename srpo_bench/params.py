"""The pipeline's parameters: one profile's params file, read and validated before any work starts.

A profile is ``params.yaml`` (the default) or ``pipelines/<profile>/params.yaml``; paths in it are
relative to the repository root, where DVC runs every stage. Each section of the file is a typed
dataclass below; :func:`load_params` refuses a missing or unknown key, or a value of the wrong
type, with a one-line error naming the file.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from srpo.config import PROFILES, TASKS, make_config
from srpo.precision import check_device
from srpo_bench.eval.bandit_tasks import BANDITS
from srpo_bench.eval.baselines import METHODS, BaselineConfig
from srpo_bench.eval.datasets import ENV_VERSION_CHOICES
from srpo_bench.eval.generate import GENERATION_PROFILES


@dataclass(frozen=True)
class GenerationParams:
    """How the datasets are generated (srpo_bench.eval.generate)."""

    profile: str  # a GENERATION_PROFILES name: transitions per dataset (and a SAC budget, see policies)
    seed: int = 0
    # A directory with <env>/policies.npz + card.json (the committed data_policies/, made by
    # pipelines/data_policies); None trains the data-generating policies in the datasets stage
    # at the profile's SAC budget.
    policies: str | None = None

    def __post_init__(self) -> None:
        if self.profile not in GENERATION_PROFILES:
            raise ValueError(f"generation.profile must be one of {', '.join(GENERATION_PROFILES)}")
        if self.policies is not None and not isinstance(self.policies, str):
            raise ValueError(f"generation.policies must be a directory path or null, got {self.policies!r}")


@dataclass(frozen=True)
class TrainParams:
    """The training budget of every run: a srpo.config profile and ``section.field`` overrides."""

    profile: str
    overrides: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.profile not in PROFILES:
            raise ValueError(f"train.profile must be one of {', '.join(PROFILES)}")


# Curve episodes are seeded in their own block, apart from the final evaluation's (see EvaluationParams).
CURVE_SEED_OFFSET = 1_000_000


@dataclass(frozen=True)
class EvaluationParams:
    """Rollouts of every policy: episode i of run seed S is reset with seed + 1000 S + i.

    ``env_version``: the locomotion environment version, ``auto`` (from the dataset's provenance:
    v4 for D4RL hdf5 files, v5 for Minari and generated data), ``v4`` or ``v5``.
    ``every``: policy steps between the policy snapshots that the evaluation curve is measured
    on (0: no curve); ``curve_episodes`` episodes per snapshot, episode i of run seed S reset
    with seed + 1,000,000 + 1000 S + i, apart from the final evaluation's. The tables use the
    final evaluation (``episodes``, of the finished policy).
    """

    episodes: int
    seed: int
    num_envs: int = 8  # environments stepped together (at most the episodes)
    env_version: str = "auto"
    every: int = 0
    curve_episodes: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.episodes <= 1000:
            raise ValueError(f"evaluation.episodes must be in [1, 1000], got {self.episodes}")
        if self.env_version not in ENV_VERSION_CHOICES:
            raise ValueError(
                f"evaluation.env_version must be one of {', '.join(ENV_VERSION_CHOICES)}, "
                f"got {self.env_version!r}"
            )
        if self.every < 0:
            raise ValueError(f"evaluation.every must be >= 0 policy steps (0: no curve), got {self.every}")
        if not 1 <= self.curve_episodes <= 1000:
            raise ValueError(f"evaluation.curve_episodes must be in [1, 1000], got {self.curve_episodes}")


@dataclass(frozen=True)
class ReportParams:
    """The report's statistics: the variant others are compared with, CI level, bootstrap."""

    reference_variant: str
    confidence: float = 0.95
    bootstrap_reps: int = 10_000
    seed: int = 0


@dataclass(frozen=True)
class FocusParams:
    """Extra policy variants (ablations, costly baselines) on a subset of the tasks."""

    tasks: list[str]
    variants: dict[str, dict]


@dataclass(frozen=True)
class ScoreAccuracyParams:
    """Score accuracy (method §9): bandit sample sizes, the held-out share of a dataset, draws per t-bin."""

    n_train: int
    n_heldout: int
    heldout_fraction: float
    draws_per_bin: int


@dataclass(frozen=True)
class GradientVarianceParams:
    """Variance of the E6 gradient: when during training, how many draws, bootstrap replicates."""

    fractions: list[float]
    n_samples: int
    bootstrap_reps: int


@dataclass(frozen=True)
class BanditAblationParams:
    """The bandits on which the SRPO focus variants are checked against their exact optima."""

    bandits: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class DiagnosticsParams:
    """The diagnostics of every run (validation/diagnose.py): critic accuracy on held-out episodes,
    policy support and extraction. (The score at the policy's actions on the bandits is measured in
    the bandit ablation stage, on the policies it trains.)

    The held-out critic costs one critic training per (task, seed): ``critic_steps`` null trains it for
    the run's own critic budget, so that its convergence speaks for the run's critic.
    """

    heldout_fraction: float  # episodes held out (the score-accuracy split's seed)
    critic_steps: int | None  # the held-out critic's steps; null: the run's critic.steps
    critic_points: int  # checks of the held-out critic, evenly spaced over its training
    convergence_tol: float  # converged: last interval's change of mean Q <= tol x the returns' std
    n_states: int  # dataset states at which each policy is diagnosed
    k_states: int  # nearest dataset states whose actions the policy's action is compared with
    t_grid: list[float]  # diffusion times of the per-t measures

    def __post_init__(self) -> None:
        if not 0.0 < self.heldout_fraction < 1.0:
            raise ValueError(
                f"validation.diagnostics.heldout_fraction must be in (0, 1), got {self.heldout_fraction}"
            )
        if self.critic_steps is not None and self.critic_steps < 1:
            raise ValueError("validation.diagnostics.critic_steps must be >= 1, or null for the run's budget")
        if self.critic_points < 2:
            raise ValueError(
                "validation.diagnostics.critic_points must be >= 2 (convergence compares two checks)"
            )
        if self.n_states < 2 or self.k_states < 1:
            raise ValueError("validation.diagnostics needs n_states >= 2 and k_states >= 1")
        if not self.t_grid or not all(0.0 < t < 1.0 for t in self.t_grid):
            raise ValueError(f"validation.diagnostics.t_grid must be times in (0, 1), got {self.t_grid}")


@dataclass(frozen=True)
class ValidationParams:
    """The method §9 checks: score accuracy, gradient variance, bandit ablation."""

    tasks: list[str]  # locomotion tasks of the score-accuracy and gradient-variance stages
    bandits: list[str]
    bandit_profile: str
    bandit_overrides: dict[str, Any]
    score_accuracy: ScoreAccuracyParams
    gradient_variance: GradientVarianceParams
    bandit_ablation: BanditAblationParams
    diagnostics: DiagnosticsParams

    def __post_init__(self) -> None:
        unknown = [b for b in [*self.bandits, *self.bandit_ablation.bandits] if b not in BANDITS]
        if unknown:
            raise ValueError(f"unknown bandit(s) {', '.join(unknown)}; known: {', '.join(BANDITS)}")
        if self.bandit_profile not in PROFILES:
            raise ValueError(f"validation.bandit_profile must be one of {', '.join(PROFILES)}")


@dataclass(frozen=True)
class PipelineParams:
    """One profile of the pipeline: what to generate, train, evaluate and report."""

    profile: str
    data_dir: str
    run_dir: str
    report_dir: str
    generation: GenerationParams
    envs: list[str]  # environments whose datasets are generated (the datasets stages)
    tasks: list[str]  # ENV-KIND: the pipeline's runs (hopper-medium-replay, ...)
    seeds: list[int]
    train: TrainParams
    variants: dict[str, dict]  # name -> method, baseline knobs, episodes, RunConfig overrides (variant_spec)
    evaluation: EvaluationParams
    report: ReportParams
    datasets: dict[str, str] = field(
        default_factory=dict
    )  # task -> Minari id or hdf5 path; default: generated
    focus: FocusParams | None = None
    validation: ValidationParams | None = None
    threads: int = 0
    device: str = "cpu"
    compile: bool = False  # torch.compile the seed-batched losses (srpo.fast.seed_batch.maybe_compiled)
    source: str = "params.yaml"

    def __post_init__(self) -> None:
        where = f"in {self.source}"
        if not self.envs or not self.tasks:
            raise ValueError(f"envs and tasks must be non-empty lists {where} (tasks are ENV-KIND)")
        unknown = [t for t in self.tasks if t not in TASKS]
        if unknown:
            raise ValueError(f"unknown task(s) {', '.join(unknown)} {where}; `srpo tasks` lists them")
        if len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"tasks must be distinct {where}, got {self.tasks}")
        ungenerated = [
            t for t in self.tasks if t not in self.datasets and t.partition("-")[0] not in self.envs
        ]
        if ungenerated:
            raise ValueError(
                f"task(s) {', '.join(ungenerated)} {where} train on generated data, but their "
                f"environment is not in envs {self.envs}: add it (datasets are generated per "
                "environment) or map the task to real data under datasets:"
            )
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be a non-empty list of distinct integers {where}, got {self.seeds}")
        try:  # a bad training override fails here, not hours later in its stage
            cfg = self.run_config(self.tasks[0], self.seeds[0])
            for stage in ("behavior", "critic", "policy"):
                check_device(getattr(cfg, stage).precision, self.device, f"{stage}.precision")
        except (ValueError, RuntimeError) as e:
            raise ValueError(f"train.overrides {where}: {e}") from None
        if not self.variants:
            raise ValueError(f"variants must name at least one policy variant {where} (e.g. srpo: {{}})")
        if self.focus:
            outside = [t for t in self.focus_tasks if t not in self.tasks]
            if outside:
                raise ValueError(
                    f"focus task(s) {', '.join(outside)} are not among the tasks {where}: the focus "
                    "variants reuse those runs' behavior models and critics"
                )
            both = set(self.focus.variants) & set(self.variants)
            if both:
                raise ValueError(
                    f"variant name(s) {', '.join(sorted(both))} appear in variants and focus.variants {where}"
                )
        for name in self.all_variants:
            if "." in name or "/" in name:
                raise ValueError(
                    f"variant name {name!r} {where} may not contain '.' or '/' (DVC reads params by "
                    "dotted path, and the name is a directory): write e.g. t-fixed-0p3"
                )
            self.variant_spec(name)  # raises on an unknown method or a bad baseline setting
        if self.validation:
            outside = [t for t in self.validation_tasks if t not in self.tasks]
            if outside:
                raise ValueError(
                    f"validation task(s) {', '.join(outside)} are not among the tasks {where}: "
                    "gradient variance is measured on those runs' behavior models and critics"
                )
        if self.report.reference_variant not in self.variants:
            raise ValueError(
                f"report.reference_variant must be one of the variants {list(self.variants)} {where}"
            )

    @property
    def validation_tasks(self) -> list[str]:
        """Locomotion tasks of the score-accuracy and gradient-variance stages."""
        return self.validation.tasks if self.validation else []

    @property
    def validation_dir(self) -> Path:
        """Outputs of the validation stages (beside run_dir, which the report reads as a whole)."""
        return Path(self.run_dir + "-validation")

    @property
    def focus_tasks(self) -> list[str]:
        """The tasks that also run the focus variants (ablations, expensive baselines)."""
        if not self.focus:
            return []
        return list(self.focus.tasks)

    @property
    def all_variants(self) -> dict[str, dict]:
        return {**self.variants, **(self.focus.variants if self.focus else {})}

    def variants_of(self, task: str) -> list[str]:
        """The variants that run on ``task``: every main variant, plus the focus ones on focus tasks."""
        extra = list(self.focus.variants) if task in self.focus_tasks else []
        return [*self.variants, *extra]

    def variant_spec(self, variant: str) -> "VariantSpec":
        """How a variant is made: its method, baseline knobs, config overrides and evaluation episodes."""
        if variant not in self.all_variants:
            raise ValueError(
                f"unknown variant {variant!r}; {self.source} defines {', '.join(self.all_variants)}"
            )
        raw = dict(self.all_variants[variant] or {})
        method = raw.pop("method", "srpo")
        if method not in METHODS:
            raise ValueError(
                f"variant {variant!r} has unknown method {method!r} in {self.source}; "
                f"choose from {', '.join(METHODS)}"
            )
        knobs = {k: raw.pop(k) for k in BASELINE_KEYS if k in raw}
        episodes = raw.pop("episodes", None)
        if "beta_scale" in raw:  # shorthand for the override policy.beta_scale (a beta sweep across tasks)
            raw["policy.beta_scale"] = raw.pop("beta_scale")
        try:
            bcfg = BaselineConfig(**knobs)
        except ValueError as exc:
            raise ValueError(f"variant {variant!r} in {self.source}: {exc}") from None
        if knobs and method == "srpo":
            raise ValueError(
                f"variant {variant!r} in {self.source}: {', '.join(knobs)} apply to baselines only"
            )
        if episodes is not None and int(episodes) < 1:
            raise ValueError(f"variant {variant!r} in {self.source}: episodes must be >= 1, got {episodes}")
        return VariantSpec(
            method,
            bcfg,
            {str(k): as_override(v) for k, v in raw.items()},
            int(episodes if episodes is not None else self.evaluation.episodes),
        )

    def run_config(self, task: str, seed: int, variant: str | None = None):
        """The RunConfig of a run: task preset, training profile, then profile and variant overrides.

        A policy variant's run also keeps a snapshot every ``evaluation.every`` steps (the
        evaluation curve's), unless the overrides set ``policy.snapshot_every`` themselves.
        """
        sets = self.overrides(variant)
        if variant is not None:
            sets = {"policy.snapshot_every": str(self.evaluation.every)} | sets
        return make_config(task, self.train.profile, seed, sets)

    def stage_path(self, task: str, seed: int, stage: str) -> Path:
        """Run directory of one seed's ``behavior`` or ``critic`` stage."""
        return Path(self.run_dir) / task / stage / f"seed{seed}"

    def upstream(self, task: str, seed: int) -> dict[str, Path]:
        """The directories of the behavior model and critic that every policy variant of a run uses."""
        return {stage: self.stage_path(task, seed, stage) for stage in ("behavior", "critic")}

    def variant_path(self, task: str, seed: int, variant: str) -> Path:
        return Path(self.run_dir) / task / "policy" / variant / f"seed{seed}"

    def evaluation_path(self, task: str, seed: int, variant: str) -> Path:
        return Path(self.run_dir) / task / "evaluation" / variant / f"seed{seed}.json"

    @property
    def minari_root(self) -> Path:
        return Path(self.data_dir) / "minari"

    def overrides(self, variant: str | None = None) -> dict[str, str]:
        """``--set`` overrides of a run: the profile's, then the variant's."""
        sets = {str(k): as_override(v) for k, v in self.train.overrides.items()}
        if variant is not None:
            sets |= self.variant_spec(variant).overrides
        return sets


# Variant keys that are not RunConfig overrides: the baselines' knobs
# (srpo_bench.eval.baselines.BaselineConfig).
BASELINE_KEYS = ("temperature", "weight_clip", "n_candidates", "solver_steps")


@dataclass(frozen=True)
class VariantSpec:
    method: str  # srpo, bc, iql-awr or diffusion (srpo_bench.eval.baselines.METHODS)
    baseline: object  # srpo_bench.eval.baselines.BaselineConfig
    overrides: dict[str, str]  # RunConfig overrides (policy.beta, policy.t_fixed, policy.beta_scale, ...)
    episodes: int  # evaluation episodes of each run


def as_override(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return "none" if value is None else str(value)


def load_params(path: str | Path) -> PipelineParams:
    """Read and validate a profile's params file; errors name the file and the key."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"params file {path} not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        # One line: where the parser stopped and why (PyYAML's own message spans several lines).
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ValueError(f"{path} is not valid YAML{where}: {problem}; fix the file and rerun") from exc
    if not isinstance(raw, dict):
        raise ValueError(f"{path} must be a YAML mapping of pipeline parameters")
    raw = {k: v for k, v in raw.items() if k not in ("root", "params_file")}  # DVC's, not the pipeline's
    if not raw.get("focus"):
        raw.pop("focus", None)
    if not raw.get("validation"):
        raw.pop("validation", None)
    return _build(PipelineParams, {**raw, "source": str(path)}, "", path)


def _build(cls: type, raw: Any, where: str, path: Path) -> Any:
    """``cls`` from a YAML mapping: required keys present, no unknown key, values of the declared types."""
    name = where.rstrip(".") or "the file"
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: {name} must be a mapping, got {raw!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    required = [
        k
        for k, f in fields.items()
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    missing = [where + k for k in required if k not in raw]
    if missing:
        raise ValueError(f"{path} lacks key(s) {', '.join(missing)}; params.yaml shows the full set")
    unknown = sorted(where + k for k in set(raw) - set(fields))
    if unknown:
        raise ValueError(f"{path} has unknown key(s) {', '.join(unknown)}")
    hints = typing.get_type_hints(cls)
    values = {k: _value(hints[k], v, where + k, path) for k, v in raw.items()}
    try:
        return cls(**values)
    except ValueError as exc:
        message = str(exc)
        raise ValueError(message if str(path) in message else f"{path}: {message}") from None


def _value(hint: Any, value: Any, key: str, path: Path) -> Any:
    """``value`` checked against ``hint``: nested sections built, ints and floats coerced."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        hint = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key + ".", path)
    expected = origin or hint
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected is bool and not isinstance(value, bool):
        raise ValueError(f"{path}: {key} must be true or false, got {value!r}")
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        raise ValueError(
            f"{path}: {key} must be of type {getattr(expected, '__name__', expected)}, got {value!r}"
        )
    if origin is list and args and args[0] in (int, float, str):
        return [_value(args[0], v, f"{key}[{i}]", path) for i, v in enumerate(value)]
    return value
