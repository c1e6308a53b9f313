"""The pipeline's parameters: one profile's params file, read and validated before any work starts.

A profile is ``params.yaml`` (the default) or ``pipelines/<profile>/params.yaml``; paths in it are
relative to the repository root, where DVC runs every stage.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, replace
from pathlib import Path

import yaml

from srpo.config import PROFILES, TASKS, make_config
from srpo.precision import check_device
from srpo_bench.eval.bandit_tasks import BANDITS
from srpo_bench.eval.baselines import METHODS, BaselineConfig
from srpo_bench.eval.generate import GENERATION_PROFILES


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
    focus: dict = field(default_factory=dict)  # envs, kinds, variants: extra variants on a subset of the tasks
    validation: dict = field(default_factory=dict)  # score_accuracy, gradient_variance, bandit_ablation settings
    threads: int = 0
    device: str = "cpu"
    compile: bool = False  # torch.compile the seed-batched losses (srpo.fast.seed_batch.maybe_compiled)
    source: str = "params.yaml"

    def __post_init__(self) -> None:
        where = f"in {self.source}"
        if not self.envs or not self.kinds:
            raise ValueError(f"envs and kinds must be non-empty lists {where}; the tasks are ENV-KIND")
        unknown = [t for t in self.tasks if t not in TASKS]
        if unknown:
            raise ValueError(f"unknown task(s) {', '.join(unknown)} {where}; `srpo tasks` lists them")
        if not isinstance(self.compile, bool):
            raise ValueError(f"compile must be true or false {where}, got {self.compile!r}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be a non-empty list of distinct integers {where}, got {self.seeds}")
        if self.generation.get("profile") not in GENERATION_PROFILES:
            raise ValueError(f"generation.profile must be one of {', '.join(GENERATION_PROFILES)} {where}")
        if self.train.get("profile") not in PROFILES:
            raise ValueError(f"train.profile must be one of {', '.join(PROFILES)} {where}")
        try:  # a bad training override fails here, not hours later in its stage
            cfg = self.run_config(self.tasks[0], self.seeds[0])
            for stage in ("behavior", "critic", "policy"):
                check_device(getattr(cfg, stage).precision, self.device, f"{stage}.precision")
        except (ValueError, RuntimeError) as e:
            raise ValueError(f"train.overrides {where}: {e}") from None
        if not self.variants:
            raise ValueError(f"variants must name at least one policy variant {where} (e.g. srpo: {{}})")
        if self.focus:
            missing = {"envs", "kinds", "variants"} - set(self.focus)
            if missing:
                raise ValueError(f"focus needs envs, kinds and variants {where}; missing {', '.join(sorted(missing))}")
            outside = [t for t in self.focus_tasks if t not in self.tasks]
            if outside:
                raise ValueError(f"focus task(s) {', '.join(outside)} are not among the tasks {where}: the focus "
                                 "variants reuse those runs' behavior models and critics")
            both = set(self.focus["variants"]) & set(self.variants)
            if both:
                raise ValueError(f"variant name(s) {', '.join(sorted(both))} appear in variants and focus.variants {where}")
        for name in self.all_variants:
            if "." in name or "/" in name:
                raise ValueError(f"variant name {name!r} {where} may not contain '.' or '/' (DVC reads params by "
                                 "dotted path, and the name is a directory): write e.g. t-fixed-0p3")
            self.variant_spec(name)  # raises on an unknown method or a bad baseline setting
        if self.validation:
            self._check_validation(where)
        if self.report.get("reference_variant") not in self.variants:
            raise ValueError(f"report.reference_variant must be one of the variants {list(self.variants)} {where}")
        if int(self.evaluation.get("episodes", 0)) < 1:
            raise ValueError(f"evaluation.episodes must be >= 1 {where}")

    @property
    def tasks(self) -> list[str]:
        """ENV-KIND for every env and kind: the pipeline's matrix (hopper-medium, ...)."""
        return [f"{env}-{kind}" for env in self.envs for kind in self.kinds]

    def _check_validation(self, where: str) -> None:
        v = self.validation
        missing = sorted({"envs", "kinds", "bandits", "bandit_profile", "bandit_overrides", "score_accuracy",
                          "gradient_variance", "bandit_ablation"} - set(v))
        if missing:
            raise ValueError(f"validation lacks {', '.join(missing)} {where}; params.yaml shows the full set")
        outside = [t for t in self.validation_tasks if t not in self.tasks]
        if outside:
            raise ValueError(f"validation task(s) {', '.join(outside)} are not among the tasks {where}: gradient "
                             "variance is measured on those runs' behavior models and critics")
        shapes = [*v["bandits"], *v["bandit_ablation"].get("bandits", [])]
        unknown = [b for b in shapes if b not in BANDITS]
        if unknown:
            raise ValueError(f"unknown bandit(s) {', '.join(unknown)} {where}; known: {', '.join(BANDITS)}")
        if v["bandit_profile"] not in PROFILES:
            raise ValueError(f"validation.bandit_profile must be one of {', '.join(PROFILES)} {where}")

    @property
    def validation_tasks(self) -> list[str]:
        """Locomotion tasks of the score-accuracy and gradient-variance stages."""
        v = self.validation or {}
        return [f"{env}-{kind}" for env in v.get("envs", []) for kind in v.get("kinds", [])]

    @property
    def validation_dir(self) -> Path:
        """Outputs of the validation stages (beside run_dir, which the report reads as a whole)."""
        return Path(self.run_dir + "-validation")

    @property
    def focus_tasks(self) -> list[str]:
        """The tasks that also run the focus variants (ablations, expensive baselines)."""
        if not self.focus:
            return []
        return [f"{env}-{kind}" for env in self.focus["envs"] for kind in self.focus["kinds"]]

    @property
    def all_variants(self) -> dict[str, dict]:
        return {**self.variants, **(self.focus.get("variants") or {} if self.focus else {})}

    def variants_of(self, task: str) -> list[str]:
        """The variants that run on ``task``: every main variant, plus the focus ones on focus tasks."""
        extra = list(self.focus["variants"]) if task in self.focus_tasks else []
        return [*self.variants, *extra]

    def variant_spec(self, variant: str) -> "VariantSpec":
        """How a variant is made: its method, baseline knobs, config overrides and evaluation episodes."""
        if variant not in self.all_variants:
            raise ValueError(f"unknown variant {variant!r}; {self.source} defines {', '.join(self.all_variants)}")
        raw = dict(self.all_variants[variant] or {})
        method = raw.pop("method", "srpo")
        if method not in METHODS:
            raise ValueError(f"variant {variant!r} has unknown method {method!r} in {self.source}; "
                             f"choose from {', '.join(METHODS)}")
        knobs = {k: raw.pop(k) for k in BASELINE_KEYS if k in raw}
        episodes = raw.pop("episodes", None)
        beta_scale = float(raw.pop("beta_scale", 1.0))
        if not beta_scale > 0:
            raise ValueError(f"variant {variant!r} in {self.source}: beta_scale must be > 0, got {beta_scale}")
        try:
            bcfg = BaselineConfig(**knobs)
        except ValueError as exc:
            raise ValueError(f"variant {variant!r} in {self.source}: {exc}") from None
        if knobs and method == "srpo":
            raise ValueError(f"variant {variant!r} in {self.source}: {', '.join(knobs)} apply to baselines only")
        if episodes is not None and int(episodes) < 1:
            raise ValueError(f"variant {variant!r} in {self.source}: episodes must be >= 1, got {episodes}")
        return VariantSpec(method, bcfg, {str(k): as_override(v) for k, v in raw.items()},
                           int(episodes if episodes is not None else self.evaluation["episodes"]), beta_scale)

    def run_config(self, task: str, seed: int, variant: str | None = None):
        """The RunConfig of a run: task preset, training profile, profile and variant overrides, beta scale."""
        cfg = make_config(task, self.train["profile"], seed, self.overrides(variant))
        if variant is not None and self.variant_spec(variant).beta_scale != 1.0:
            cfg = replace(cfg, policy=replace(cfg.policy, beta=cfg.policy.beta * self.variant_spec(variant).beta_scale))
        return cfg

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
        sets = {str(k): as_override(v) for k, v in (self.train.get("overrides") or {}).items()}
        if variant is not None:
            sets |= self.variant_spec(variant).overrides
        return sets


# Variant keys that are not RunConfig overrides: the baselines' knobs (srpo_bench.eval.baselines.BaselineConfig).
BASELINE_KEYS = ("temperature", "weight_clip", "n_candidates", "solver_steps")


@dataclass(frozen=True)
class VariantSpec:
    method: str  # srpo, bc, iql-awr or diffusion (srpo_bench.eval.baselines.METHODS)
    baseline: object  # srpo_bench.eval.baselines.BaselineConfig
    overrides: dict[str, str]  # RunConfig overrides (policy.beta, policy.t_fixed, ...)
    episodes: int  # evaluation episodes of each run
    beta_scale: float = 1.0  # policy.beta = the task preset's beta x beta_scale (a beta sweep across tasks)


def as_override(value) -> str:
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
