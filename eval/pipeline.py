"""The steps of the DVC pipeline (``dvc.yaml``), one command per stage.

    python -m eval.pipeline datasets --params params.yaml --env hopper
    python -m eval.pipeline train    --params params.yaml --task hopper-medium --stage behavior
    python -m eval.pipeline policy   --params params.yaml --task hopper-medium --variant srpo
    python -m eval.pipeline evaluate --params params.yaml --task hopper-medium --seed 0 --variant srpo
    python -m eval.pipeline report   --params params.yaml

Every knob comes from the profile's params file (``params.yaml`` for the default
profile, ``pipelines/<profile>/params.yaml`` for the others), read into
:class:`PipelineParams`; the file is validated before any work starts. Paths in it are
relative to the repository root, where DVC runs every stage.

Training steps train every seed of a task in one process, seeds as a batch dimension
(:mod:`srpo.seed_batch`); each seed still gets its own checkpoint, as a single run would.
Layout of a profile's outputs::

    <data_dir>/minari/srpo/<env>/<kind>-v0               generated datasets (Minari store), task = <env>-<kind>
    <run_dir>/<task>/behavior/seed<S>/behavior.pt         shared by all policy variants of the run
    <run_dir>/<task>/critic/seed<S>/critic.pt             shared by all policy variants of the run
    <run_dir>/<task>/policy/<variant>/seed<S>/policy.pt
    <run_dir>/<task>/evaluation/<variant>/seed<S>.json
    <report_dir>/report.md, metrics.json, figures/, plots/
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import MISSING, dataclass, field
from pathlib import Path

import yaml

from srpo.config import PROFILES, TASKS
from srpo.precision import check_device


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
    compile: bool = False  # torch.compile the seed-batched losses (srpo.seed_batch.maybe_compiled)
    source: str = "params.yaml"

    def __post_init__(self) -> None:
        from eval.generate import GENERATION_PROFILES

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
        from validation.bandits import BANDITS

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
        from eval.baselines import METHODS, BaselineConfig

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
        return VariantSpec(method, bcfg, {str(k): _as_override(v) for k, v in raw.items()},
                           int(episodes if episodes is not None else self.evaluation["episodes"]), beta_scale)

    def run_config(self, task: str, seed: int, variant: str | None = None):
        """The RunConfig of a run: task preset, training profile, profile and variant overrides, beta scale."""
        from dataclasses import replace

        from srpo.config import make_config

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
        sets = {str(k): _as_override(v) for k, v in (self.train.get("overrides") or {}).items()}
        if variant is not None:
            sets |= self.variant_spec(variant).overrides
        return sets


# Variant keys that are not RunConfig overrides: the baselines' knobs (eval.baselines.BaselineConfig).
BASELINE_KEYS = ("temperature", "weight_clip", "n_candidates", "solver_steps")


@dataclass(frozen=True)
class VariantSpec:
    method: str  # srpo, bc, iql-awr or diffusion (eval.baselines.METHODS)
    baseline: object  # eval.baselines.BaselineConfig
    overrides: dict[str, str]  # RunConfig overrides (policy.beta, policy.t_fixed, ...)
    episodes: int  # evaluation episodes of each run
    beta_scale: float = 1.0  # policy.beta = the task preset's beta x beta_scale (a beta sweep across tasks)


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


def _write_stage_metrics(out: Path, stage: str, task: str, seed: int, variant: str | None, cfg, data,
                         history: list, wall_s: float, batched_seeds: int, **extra) -> None:
    from srpo import artifacts

    artifacts.write_json(out / f"{stage}_metrics.json", {
        "task": task, "seed": seed, "variant": variant, "stage": stage, **extra, "config": cfg.to_dict(),
        "dataset": {"name": data.name, "transitions": len(data), "fingerprint": data.fingerprint()},
        # Seeds trained together share the wall time: each records its share, so that sums are totals.
        "wall_s": wall_s / batched_seeds, "batched_seeds": batched_seeds, "history": history,
    })


def _trained_earlier(out: Path, stage: str, cfg, data, **extra) -> bool:
    """Whether ``out`` holds a finished ``stage`` checkpoint, and its metrics, from a run of this config.

    Called after :func:`claim_for_current_code` (so the checkpoint is this code's): such a seed is
    reused, not retrained, and its metrics file - the wall time of the run that trained it, not the
    time this run took to load it - stands.
    """
    from srpo import artifacts

    ckpt, metrics = out / f"{stage}.pt", out / f"{stage}_metrics.json"
    if not (ckpt.exists() and metrics.exists()):
        return False
    try:
        m = json.loads(metrics.read_text())
        done = bool(artifacts.load_torch(ckpt).get("done"))
    except (OSError, ValueError, RuntimeError):  # unreadable: the stage retrains or rewrites it
        return False
    same = (m.get("config") == json.loads(json.dumps(cfg.to_dict()))
            and m.get("dataset", {}).get("fingerprint") == data.fingerprint()
            and all(m.get(k) == json.loads(json.dumps(v)) for k, v in extra.items()))
    return done and same


def _drop_other_seeds(parent: Path, seeds: list[int]) -> None:
    """Remove ``seed<S>`` folders of seeds no longer in the params from a stage's output folder."""
    import shutil

    keep = {f"seed{s}" for s in seeds}
    for d in parent.glob("seed*"):
        if d.is_dir() and d.name not in keep:
            shutil.rmtree(d)


def training_code_fingerprint(*packages: str) -> str:
    """A hash of the code that trains (``srpo/*.py``, ``eval/baselines.py``, and ``packages/*.py``)."""
    import hashlib

    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    files = [f for d in ("srpo", *packages) for f in sorted((root / d).glob("*.py"))] + [root / "eval" / "baselines.py"]
    for f in files:
        digest.update(f"{f.parent.name}/{f.name}".encode() + b"\0" + f.read_bytes())
    return digest.hexdigest()[:16]


def validation_scratch(p: PipelineParams, *parts: str) -> Path:
    """A validation stage's scratch folder (its checkpoints), emptied unless this code and these params made it.

    The scratch folders are not DVC outputs: they persist between runs so that a killed
    validation stage resumes. When DVC re-runs the stage because its code or params changed,
    the checkpoints there must not be reused (nor refused as another config's): a marker
    ``recipe.json`` names the code and params that filled the folder, written before training.
    """
    import hashlib
    import shutil

    from srpo import artifacts

    recipe = {"code": training_code_fingerprint("validation"),
              "params": {k: getattr(p, k) for k in ("seeds", "train", "generation", "datasets", "validation")}}
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
    import json

    from srpo import artifacts

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


def _train_seeds(p: PipelineParams, task: str, stage: str, variant: str | None) -> None:
    """One stage of every seed of ``task``, trained as one batch (srpo.seed_batch)."""
    from srpo import seed_batch

    seeds = list(p.seeds)
    cfgs = [p.run_config(task, s, variant) for s in seeds]
    data = _dataset(p, task).transitions
    outs = [p.stage_path(task, s, stage) if variant is None else p.variant_path(task, s, variant) for s in seeds]
    _drop_other_seeds(outs[0].parent, seeds)
    code = training_code_fingerprint()
    for out in outs:
        claim_for_current_code(out, f"{stage}.pt", code)
    earlier = [_trained_earlier(out, stage, cfg, data) for cfg, out in zip(cfgs, outs)]
    result = seed_batch.train(cfgs, data, outs, p.device, stages=(stage,),
                              upstreams=[p.upstream(task, s) for s in seeds], restart_on_change=True,
                              progress=sys.stderr.isatty(), compile=p.compile)
    trained_now = len(seeds) - sum(earlier)
    for k, (seed, cfg, out) in enumerate(zip(seeds, cfgs, outs)):
        if not earlier[k]:  # a reused seed keeps the metrics (and the wall time) of the run that trained it
            _write_stage_metrics(out, stage, task, seed, variant, cfg, data, result.histories[stage][k],
                                 result.wall_s[stage], trained_now)


def step_train(p: PipelineParams, task: str, stage: str) -> None:
    if stage not in ("behavior", "critic"):
        raise ValueError(f"the train step runs behavior or critic, got {stage!r}; the policy has its own step")
    _train_seeds(p, task, stage, None)


def step_policy(p: PipelineParams, task: str, variant: str) -> None:
    """One policy variant for every seed of ``task``: SRPO seed-batched, baselines one seed after another."""
    import time

    import torch

    from eval import baselines
    from srpo.train import load_finished

    spec = p.variant_spec(variant)
    if variant not in p.variants_of(task):
        raise ValueError(f"variant {variant!r} does not run on {task} (not a focus task) in {p.source}")
    if spec.method == "srpo":
        _train_seeds(p, task, "policy", variant)
        return
    data = _dataset(p, task).transitions
    _drop_other_seeds(p.variant_path(task, p.seeds[0], variant).parent, list(p.seeds))
    code = training_code_fingerprint()
    for seed in p.seeds:
        cfg, out = p.run_config(task, seed, variant), p.variant_path(task, seed, variant)
        claim_for_current_code(out, "policy.pt", code)
        if _trained_earlier(out, "policy", cfg, data, baseline=vars(spec.baseline)):
            continue
        t0 = time.perf_counter()
        history: list = []
        if spec.method == "diffusion":
            baselines.write_selection_checkpoint(out / "policy.pt", cfg, spec.baseline)
        else:
            critic = None
            if spec.method == "iql-awr":
                critic = load_finished("critic", cfg, data, p.stage_path(task, seed, "critic"),
                                       torch.device(p.device), torch.float32)
            _, history = baselines.train_regression_policy(spec.method, cfg, spec.baseline, data, critic, out,
                                                           torch.device(p.device), restart_on_change=True,
                                                           progress=sys.stderr.isatty())
        _write_stage_metrics(out, "policy", task, seed, variant, cfg, data, history, time.perf_counter() - t0, 1,
                             method=spec.method, baseline=vars(spec.baseline))


def step_evaluate(p: PipelineParams, task: str, seed: int, variant: str) -> None:
    import time

    from eval.checkpoints import load_policy
    from eval.references import ANTMAZE_REFERENCE
    from eval.rollout import EvaluationUnavailable, env_spec_for_task, evaluate, torch_policy
    from eval.latency import TimedPolicy
    from srpo import artifacts

    ev = p.evaluation
    spec = p.variant_spec(variant)
    # Evaluation episodes are seeded apart from training: run seed S uses seeds base + 1000 S + i
    # (the diffusion baseline's candidate draws too).
    eval_seed = int(ev["seed"]) + 1000 * seed
    pi, meta = load_policy(p.variant_path(task, seed, variant), p.device, upstream=p.upstream(task, seed),
                           seed=eval_seed)
    record = {"task": task, "seed": seed, "variant": variant, "method": spec.method, "policy_step": meta["step"]}
    try:
        env_spec = env_spec_for_task(task)
    except EvaluationUnavailable as exc:
        artifacts.write_json(p.evaluation_path(task, seed, variant), {**record, "skipped": str(exc)})
        print(exc, file=sys.stderr)
        return
    reference = _dataset(p, task).reference
    if env_spec.scoring == "success":
        reference = ANTMAZE_REFERENCE
    t0 = time.perf_counter()
    timed = TimedPolicy(torch_policy(pi))
    num_envs = min(int(ev.get("num_envs", 8)), spec.episodes)
    result = evaluate(timed, env_spec, spec.episodes, eval_seed, num_envs, reference)
    # The latency of one action-selection call for num_envs states, over every step of the rollouts.
    latency = {**timed.summary(), "batch": num_envs}
    artifacts.write_json(p.evaluation_path(task, seed, variant),
                         {**record, **result.to_dict(), "wall_s": time.perf_counter() - t0, "action_latency": latency})
    print(f"{task} seed {seed} {variant}: normalized {result.to_dict()['mean_normalized']}")


def _bandit_config(p: PipelineParams, shape: str, seed: int, variant: str | None = None):
    """A bandit run at the validation's bandit profile, with a variant's policy options."""
    from dataclasses import replace

    from srpo.config import make_config

    sets = dict(p.validation.get("bandit_overrides") or {})
    if variant is not None:
        sets |= p.variant_spec(variant).overrides
    cfg = make_config(f"bandit-{shape}", p.validation["bandit_profile"], seed, {k: _as_override(v) for k, v in sets.items()})
    if variant is not None and p.variant_spec(variant).beta_scale != 1.0:
        cfg = replace(cfg, policy=replace(cfg.policy, beta=cfg.policy.beta * p.variant_spec(variant).beta_scale))
    return cfg


def step_score_bandits(p: PipelineParams) -> None:
    """Score accuracy against the exact score: every validation bandit x seed -> one JSON."""
    from srpo import artifacts
    from validation import score_accuracy as sa

    sc = p.validation["score_accuracy"]
    records = []
    for shape in p.validation["bandits"]:
        for seed in p.seeds:
            work = validation_scratch(p, "bandits", shape, f"seed{seed}")
            records.append(sa.bandit_record(shape, seed, _bandit_config(p, shape, seed), work, int(sc["n_train"]),
                                            int(sc["n_heldout"]), device=p.device, progress=sys.stderr.isatty()))
            print(f"score accuracy, bandit {shape} seed {seed}: done", flush=True)
    artifacts.write_json(p.validation_dir / "score_bandits.json", {"records": records})


def step_score_dataset(p: PipelineParams, task: str, seed: int) -> None:
    """Score accuracy on held-out episodes of a dataset: a behavior model trained on the other episodes."""
    from srpo import artifacts
    from validation import score_accuracy as sa

    sc = p.validation["score_accuracy"]
    cfg = p.run_config(task, seed)
    record = sa.dataset_record(task, _dataset(p, task).transitions, seed, cfg,
                               validation_scratch(p, "score", task, f"seed{seed}"),
                               float(sc["heldout_fraction"]), draws_per_bin=int(sc["draws_per_bin"]),
                               device=p.device, progress=sys.stderr.isatty())
    artifacts.write_json(p.validation_dir / "score" / task / f"seed{seed}.json", record)


def step_gradvar_bandits(p: PipelineParams) -> None:
    """Gradient variance of E6 with the exact score and Q: every validation bandit x seed -> one JSON."""
    from srpo import artifacts
    from validation import gradient_variance as gv

    gc = p.validation["gradient_variance"]
    records = []
    for shape in p.validation["bandits"]:
        for seed in p.seeds:
            work = validation_scratch(p, "gradvar", shape, f"seed{seed}")
            records.append(gv.measure_bandit(shape, seed, _bandit_config(p, shape, seed), work,
                                             fractions=tuple(gc["fractions"]), n_samples=int(gc["n_samples"]),
                                             reps=int(gc["bootstrap_reps"]), progress=sys.stderr.isatty()))
            print(f"gradient variance, bandit {shape} seed {seed}: done", flush=True)
    artifacts.write_json(p.validation_dir / "gradvar_bandits.json", {"records": records})


def step_gradvar_dataset(p: PipelineParams, task: str, seed: int) -> None:
    """Gradient variance of E6 on a dataset, with the run's behavior model and IQL critic."""
    from srpo import artifacts
    from validation import gradient_variance as gv

    gc = p.validation["gradient_variance"]
    record = gv.measure_task(p.run_config(task, seed), _dataset(p, task).transitions, p.upstream(task, seed),
                             validation_scratch(p, "gradvar", task, f"seed{seed}"), device=p.device,
                             fractions=tuple(gc["fractions"]), n_samples=int(gc["n_samples"]),
                             reps=int(gc["bootstrap_reps"]), progress=sys.stderr.isatty())
    artifacts.write_json(p.validation_dir / "gradvar" / task / f"seed{seed}.json", record)


def step_bandit_ablation(p: PipelineParams) -> None:
    """The reference variant and every SRPO focus variant on the ablation bandits (exact-surrogate optimum)."""
    from srpo import artifacts
    from validation.bandit_suite import ablation_record

    ref = p.report["reference_variant"]
    names = [ref, *[v for v in (p.focus.get("variants") or {}) if p.variant_spec(v).method == "srpo"]]
    records = []
    for shape in p.validation["bandit_ablation"]["bandits"]:
        for seed in p.seeds:
            work = validation_scratch(p, "ablation", shape, f"seed{seed}")
            variants = {v: _bandit_config(p, shape, seed, v) for v in names}
            records.append(ablation_record(shape, seed, _bandit_config(p, shape, seed, ref), variants, work,
                                           progress=sys.stderr.isatty()))
            print(f"bandit ablation {shape} seed {seed}: done", flush=True)
    artifacts.write_json(p.validation_dir / "bandit_ablation.json", {"reference": ref, "records": records})


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
    add("train", "train the behavior model or the IQL critic of every seed of a task (one batch)", "task", "stage")
    add("policy", "extract one policy variant for every seed of a task from its runs' behavior models and critics",
        "task", "variant")
    add("evaluate", "roll out one policy variant; per-episode returns and normalized scores", "task", "seed", "variant")
    add("score-bandits", "score accuracy of learned behavior models against the exact score (bandits)")
    add("score-dataset", "score accuracy on held-out episodes of one task's dataset", "task", "seed")
    add("gradvar-bandits", "variance of the E6 gradient on the bandits (exact score and Q)")
    add("gradvar-dataset", "variance of the E6 gradient on one run's behavior model and critic", "task", "seed")
    add("bandit-ablation", "SRPO focus variants on the bandits against their exact-surrogate optima")
    add("report", "statistics, tables and figures over every run -> report.md")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        p = load_params(args.params)
        _setup(p)
        kwargs = {k: v for k, v in vars(args).items() if k not in ("step", "params")}
        {"datasets": step_datasets, "train": step_train, "policy": step_policy, "evaluate": step_evaluate,
         "score-bandits": step_score_bandits, "score-dataset": step_score_dataset,
         "gradvar-bandits": step_gradvar_bandits, "gradvar-dataset": step_gradvar_dataset,
         "bandit-ablation": step_bandit_ablation, "report": step_report}[args.step](p, **kwargs)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
