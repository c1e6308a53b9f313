"""The steps of the DVC pipeline (``dvc.yaml``), one command per stage.

    python -m srpo_bench.pipeline datasets --params params.yaml --env hopper
    python -m srpo_bench.pipeline train    --params params.yaml --task hopper-medium --stage behavior
    python -m srpo_bench.pipeline policy   --params params.yaml --task hopper-medium --variant srpo
    python -m srpo_bench.pipeline evaluate --params params.yaml --task hopper-medium --seed 0 --variant srpo
    python -m srpo_bench.pipeline report   --params params.yaml

Every knob comes from the profile's params file (``params.yaml`` for the default
profile, ``pipelines/<profile>/params.yaml`` for the others), read into
:class:`PipelineParams`; the file is validated before any work starts. Paths in it are
relative to the repository root, where DVC runs every stage.

Training steps train every seed of a task in one process, seeds as a batch dimension
(:mod:`srpo.fast.seed_batch`); each seed still gets its own checkpoint, as a single run would.
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
import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path
from types import ModuleType

import torch

import srpo
from srpo import artifacts
from srpo.config import make_config
from srpo.fast import seed_batch
from srpo.train import load_finished
from srpo_bench import validation
from srpo_bench.eval import baselines
from srpo_bench.eval.checkpoints import load_policy
from srpo_bench.eval.datasets import GENERATED, load_dataset
from srpo_bench.eval.generate import finished_cards, generate_env
from srpo_bench.eval.latency import TimedPolicy
from srpo_bench.eval.references import ANTMAZE_REFERENCE
from srpo_bench.eval.rollout import EvaluationUnavailable, env_spec_for_task, evaluate, torch_policy
from srpo_bench.params import PipelineParams, as_override, load_params
from srpo_bench.report import write_report
from srpo_bench.validation import gradient_variance as gv, score_accuracy as sa
from srpo_bench.validation.bandit_suite import ablation_record


def _setup(p: PipelineParams) -> None:
    if p.threads:
        torch.set_num_threads(p.threads)
    # Minari reads the store's location from the environment on every call.
    os.environ["MINARI_DATASETS_PATH"] = str(p.minari_root.resolve())


def _dataset(p: PipelineParams, task: str):
    return load_dataset(task, p.datasets.get(task, GENERATED))


def step_datasets(p: PipelineParams, env: str) -> None:
    gen = p.generation
    if finished_cards(env, gen["profile"], gen["seed"], p.minari_root):
        print(f"{env}: datasets of generation profile {gen['profile']}, seed {gen['seed']} already present")
        return
    result = generate_env(env, gen["profile"], gen["seed"], p.minari_root, progress=sys.stderr.isatty())
    returns = result["cards"]["expert"]["policy_returns"]
    print(f"{env}: policy returns {returns}; SAC {result['sac_env_steps_per_s']:.0f} env-steps/s")


def _write_stage_metrics(out: Path, stage: str, task: str, seed: int, variant: str | None, cfg, data,
                         history: list, wall_s: float, batched_seeds: int, **extra) -> None:
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
    keep = {f"seed{s}" for s in seeds}
    for d in parent.glob("seed*"):
        if d.is_dir() and d.name not in keep:
            shutil.rmtree(d)


def training_code_fingerprint(*packages: ModuleType) -> str:
    """A hash of the code that trains: every module of :mod:`srpo`, eval/baselines.py, and ``packages``' modules.

    Files are found from the imported modules, so the hash is the same in a checkout and an install.
    """
    digest = hashlib.sha256()
    folders = [Path(m.__file__).resolve().parent for m in (srpo, *packages)]
    files = [f for d in folders for f in sorted(d.rglob("*.py"))] + [Path(baselines.__file__).resolve()]
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

    recipe = {"code": training_code_fingerprint(validation),
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
    """One stage of every seed of ``task``, trained as one batch (srpo.fast.seed_batch)."""
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

    sets = dict(p.validation.get("bandit_overrides") or {})
    if variant is not None:
        sets |= p.variant_spec(variant).overrides
    cfg = make_config(f"bandit-{shape}", p.validation["bandit_profile"], seed, {k: as_override(v) for k, v in sets.items()})
    if variant is not None and p.variant_spec(variant).beta_scale != 1.0:
        cfg = replace(cfg, policy=replace(cfg.policy, beta=cfg.policy.beta * p.variant_spec(variant).beta_scale))
    return cfg


def step_score_bandits(p: PipelineParams) -> None:
    """Score accuracy against the exact score: every validation bandit x seed -> one JSON."""
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
    sc = p.validation["score_accuracy"]
    cfg = p.run_config(task, seed)
    record = sa.dataset_record(task, _dataset(p, task).transitions, seed, cfg,
                               validation_scratch(p, "score", task, f"seed{seed}"),
                               float(sc["heldout_fraction"]), draws_per_bin=int(sc["draws_per_bin"]),
                               device=p.device, progress=sys.stderr.isatty())
    artifacts.write_json(p.validation_dir / "score" / task / f"seed{seed}.json", record)


def step_gradvar_bandits(p: PipelineParams) -> None:
    """Gradient variance of E6 with the exact score and Q: every validation bandit x seed -> one JSON."""
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
    gc = p.validation["gradient_variance"]
    record = gv.measure_task(p.run_config(task, seed), _dataset(p, task).transitions, p.upstream(task, seed),
                             validation_scratch(p, "gradvar", task, f"seed{seed}"), device=p.device,
                             fractions=tuple(gc["fractions"]), n_samples=int(gc["n_samples"]),
                             reps=int(gc["bootstrap_reps"]), progress=sys.stderr.isatty())
    artifacts.write_json(p.validation_dir / "gradvar" / task / f"seed{seed}.json", record)


def step_bandit_ablation(p: PipelineParams) -> None:
    """The reference variant and every SRPO focus variant on the ablation bandits (exact-surrogate optimum)."""
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
    path = write_report(p)
    print(f"report written to {path}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m srpo_bench.pipeline", description=__doc__,
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
