"""The pipeline's steps, one function per DVC stage (``python -m srpo_bench.pipeline STEP``)."""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from pathlib import Path

import torch

from srpo import artifacts
from srpo.config import make_config
from srpo.fast import seed_batch
from srpo.train import load_finished
from srpo_bench.eval import baselines
from srpo_bench.eval.checkpoints import list_snapshots, load_policy
from srpo_bench.eval.datasets import GENERATED, check_task_dims, load_dataset, resolve_env_version
from srpo_bench.eval.generate import finished_cards, generate_env
from srpo_bench.eval.latency import TimedPolicy
from srpo_bench.eval.references import ANTMAZE_REFERENCE
from srpo_bench.eval.rollout import EvaluationUnavailable, env_spec_for_task, evaluate, torch_policy
from srpo_bench.params import CURVE_SEED_OFFSET, PipelineParams, as_override
from srpo_bench.pipeline.caching import (
    claim_for_current_code,
    drop_other_seeds,
    trained_earlier,
    training_code_fingerprint,
    validation_scratch,
    write_stage_metrics,
)
from srpo_bench.report import write_report
from srpo_bench.validation import diagnose as diag, gradient_variance as gv, score_accuracy as sa
from srpo_bench.validation.bandit_suite import ablation_record


def setup(p: PipelineParams) -> None:
    if p.threads:
        torch.set_num_threads(p.threads)
    # Minari reads the store's location from the environment on every call.
    os.environ["MINARI_DATASETS_PATH"] = str(p.minari_root.resolve())


def dataset(p: PipelineParams, task: str):
    """The task's dataset, refused (one line) if its sizes are not the task environment's."""
    ds = load_dataset(task, p.datasets.get(task, GENERATED))
    check_task_dims(task, ds.transitions, f"(the params file's datasets: maps {task} to it)")
    return ds


def step_datasets(p: PipelineParams, env: str) -> None:
    gen = p.generation
    policies = None if gen.policies is None else Path(gen.policies)  # relative to the repository root
    if finished_cards(env, gen.profile, gen.seed, p.minari_root, policies):
        print(f"{env}: datasets of generation profile {gen.profile}, seed {gen.seed} already present")
        return
    result = generate_env(env, gen.profile, gen.seed, p.minari_root, sys.stderr.isatty(), policies)
    returns = result["cards"]["expert"]["policy_returns"]
    print(f"{env}: policy returns {returns}; wall {sum(result['timings_s'].values()):.0f} s")


def _train_seeds(p: PipelineParams, task: str, stage: str, variant: str | None) -> None:
    """One stage of every seed of ``task``, trained as one batch (srpo.fast.seed_batch)."""
    seeds = list(p.seeds)
    cfgs = [p.run_config(task, s, variant) for s in seeds]
    data = dataset(p, task).transitions
    outs = [
        p.stage_path(task, s, stage) if variant is None else p.variant_path(task, s, variant) for s in seeds
    ]
    drop_other_seeds(outs[0].parent, seeds)
    code = training_code_fingerprint()
    for out in outs:
        claim_for_current_code(out, f"{stage}.pt", code)
    earlier = [trained_earlier(out, stage, cfg, data) for cfg, out in zip(cfgs, outs)]
    result = seed_batch.train(
        cfgs,
        data,
        outs,
        p.device,
        stages=(stage,),
        upstreams=[p.upstream(task, s) for s in seeds],
        restart_on_change=True,
        progress=sys.stderr.isatty(),
        compile=p.compile,
    )
    trained_now = len(seeds) - sum(earlier)
    for k, (seed, cfg, out) in enumerate(zip(seeds, cfgs, outs)):
        if not earlier[k]:  # a reused seed keeps the metrics (and the wall time) of the run that trained it
            write_stage_metrics(
                out,
                stage,
                task,
                seed,
                variant,
                cfg,
                data,
                result.histories[stage][k],
                result.wall_s[stage],
                trained_now,
            )


def step_train(p: PipelineParams, task: str, stage: str) -> None:
    if stage not in ("behavior", "critic"):
        raise ValueError(
            f"the train step runs behavior or critic, got {stage!r}; the policy has its own step"
        )
    _train_seeds(p, task, stage, None)


def step_policy(p: PipelineParams, task: str, variant: str) -> None:
    """One policy variant for every seed of ``task``: SRPO seed-batched, baselines one seed after another."""

    spec = p.variant_spec(variant)
    if variant not in p.variants_of(task):
        raise ValueError(f"variant {variant!r} does not run on {task} (not a focus task) in {p.source}")
    if spec.method == "srpo":
        _train_seeds(p, task, "policy", variant)
        return
    data = dataset(p, task).transitions
    drop_other_seeds(p.variant_path(task, p.seeds[0], variant).parent, list(p.seeds))
    code = training_code_fingerprint()
    for seed in p.seeds:
        cfg, out = p.run_config(task, seed, variant), p.variant_path(task, seed, variant)
        claim_for_current_code(out, "policy.pt", code)
        if trained_earlier(out, "policy", cfg, data, baseline=vars(spec.baseline)):
            continue
        t0 = time.perf_counter()
        history: list = []
        if spec.method == "diffusion":
            baselines.write_selection_checkpoint(out / "policy.pt", cfg, spec.baseline)
        else:
            critic = None
            if spec.method == "iql-awr":
                critic = load_finished(
                    "critic",
                    cfg,
                    data,
                    p.stage_path(task, seed, "critic"),
                    torch.device(p.device),
                    torch.float32,
                )
            _, history = baselines.train_regression_policy(
                spec.method,
                cfg,
                spec.baseline,
                data,
                critic,
                out,
                torch.device(p.device),
                restart_on_change=True,
                progress=sys.stderr.isatty(),
            )
        write_stage_metrics(
            out,
            "policy",
            task,
            seed,
            variant,
            cfg,
            data,
            history,
            time.perf_counter() - t0,
            1,
            method=spec.method,
            baseline=vars(spec.baseline),
        )


def step_evaluate(p: PipelineParams, task: str, seed: int, variant: str) -> None:
    """The final evaluation of one run (the tables'), and its evaluation curve over the policy's snapshots."""
    ev = p.evaluation
    spec = p.variant_spec(variant)
    # Evaluation episodes are seeded apart from training: run seed S uses seeds base + 1000 S + i
    # (the diffusion baseline's candidate draws too).
    eval_seed = ev.seed + 1000 * seed
    run_dir = p.variant_path(task, seed, variant)
    pi, meta = load_policy(run_dir, p.device, upstream=p.upstream(task, seed), seed=eval_seed)
    record = {
        "task": task,
        "seed": seed,
        "variant": variant,
        "method": spec.method,
        "policy_step": meta["step"],
    }
    ds = dataset(p, task)
    version, why = resolve_env_version(
        ev.env_version, ds.transitions.info.get("source"), "evaluation.env_version"
    )
    record |= {"env_version": version, "env_version_reason": why}
    try:
        env_spec = env_spec_for_task(task, version)
    except EvaluationUnavailable as exc:
        artifacts.write_json(p.evaluation_path(task, seed, variant), {**record, "skipped": str(exc)})
        print(exc, file=sys.stderr)
        return
    reference = ANTMAZE_REFERENCE if env_spec.scoring == "success" else ds.reference
    t0 = time.perf_counter()
    timed = TimedPolicy(torch_policy(pi))
    num_envs = min(ev.num_envs, spec.episodes)
    result = evaluate(timed, env_spec, spec.episodes, eval_seed, num_envs, reference)
    # The latency of one action-selection call for num_envs states, over every step of the rollouts.
    latency = {**timed.summary(), "batch": num_envs}
    wall = time.perf_counter() - t0
    curve = evaluation_curve(p, run_dir, env_spec, reference, seed) if ev.every > 0 else []
    artifacts.write_json(
        p.evaluation_path(task, seed, variant),
        {
            **record,
            **result.to_dict(),
            "wall_s": wall,
            "action_latency": latency,
            "curve": curve,
            "curve_wall_s": time.perf_counter() - t0 - wall,
        },
    )
    print(
        f"{task} seed {seed} {variant} on {env_spec.env_id}: normalized {result.to_dict()['mean_normalized']}"
    )


def evaluation_curve(p: PipelineParams, run_dir: Path, env_spec, reference, seed: int) -> list[dict]:
    """Normalized score against policy step: each snapshot of the run, ``evaluation.curve_episodes`` each.

    Curve episode i of run seed S is reset with seed + 1,000,000 + 1000 S + i, apart from the final
    evaluation's episodes, and the same for every snapshot (only the policy changes along the curve).
    """
    ev = p.evaluation
    curve_seed = ev.seed + CURVE_SEED_OFFSET + 1000 * seed
    points = []
    for step, path in list_snapshots(run_dir):
        pi, _ = load_policy(path, p.device)
        res = evaluate(
            torch_policy(pi),
            env_spec,
            ev.curve_episodes,
            curve_seed,
            min(ev.num_envs, ev.curve_episodes),
            reference,
        )
        norm = res.normalized
        points.append(
            {
                "step": step,
                "episodes": ev.curve_episodes,
                "seed": curve_seed,  # episode i: curve_seed + i
                "mean_normalized": None if norm is None else float(norm.mean()),
                "std_normalized": None if norm is None else float(norm.std()),
                "mean_return": float(res.returns.mean()),
            }
        )
    return points


def bandit_config(p: PipelineParams, shape: str, seed: int, variant: str | None = None):
    """A bandit run at the validation's bandit profile, with a variant's policy options."""
    sets = {k: as_override(v) for k, v in p.validation.bandit_overrides.items()}
    if variant is not None:
        sets |= p.variant_spec(variant).overrides
    return make_config(f"bandit-{shape}", p.validation.bandit_profile, seed, sets)


def step_score_bandits(p: PipelineParams) -> None:
    """Score accuracy against the exact score: every validation bandit x seed -> one JSON."""
    sc = p.validation.score_accuracy
    records = []
    for shape in p.validation.bandits:
        for seed in p.seeds:
            work = validation_scratch(p, "bandits", shape, f"seed{seed}")
            records.append(
                sa.bandit_record(
                    shape,
                    seed,
                    bandit_config(p, shape, seed),
                    work,
                    sc.n_train,
                    sc.n_heldout,
                    device=p.device,
                    progress=sys.stderr.isatty(),
                )
            )
            print(f"score accuracy, bandit {shape} seed {seed}: done", flush=True)
    artifacts.write_json(p.validation_dir / "score_bandits.json", {"records": records})


def step_score_dataset(p: PipelineParams, task: str, seed: int) -> None:
    """Score accuracy on held-out episodes of a dataset: a behavior model trained on the other episodes."""
    sc = p.validation.score_accuracy
    cfg = p.run_config(task, seed)
    record = sa.dataset_record(
        task,
        dataset(p, task).transitions,
        seed,
        cfg,
        validation_scratch(p, "score", task, f"seed{seed}"),
        sc.heldout_fraction,
        draws_per_bin=sc.draws_per_bin,
        device=p.device,
        progress=sys.stderr.isatty(),
    )
    artifacts.write_json(p.validation_dir / "score" / task / f"seed{seed}.json", record)


def step_gradvar_bandits(p: PipelineParams) -> None:
    """Gradient variance of E6 with the exact score and Q: every validation bandit x seed -> one JSON."""
    gc = p.validation.gradient_variance
    records = []
    for shape in p.validation.bandits:
        for seed in p.seeds:
            work = validation_scratch(p, "gradvar", shape, f"seed{seed}")
            records.append(
                gv.measure_bandit(
                    shape,
                    seed,
                    bandit_config(p, shape, seed),
                    work,
                    fractions=tuple(gc.fractions),
                    n_samples=gc.n_samples,
                    reps=gc.bootstrap_reps,
                    progress=sys.stderr.isatty(),
                )
            )
            print(f"gradient variance, bandit {shape} seed {seed}: done", flush=True)
    artifacts.write_json(p.validation_dir / "gradvar_bandits.json", {"records": records})


def step_gradvar_dataset(p: PipelineParams, task: str, seed: int) -> None:
    """Gradient variance of E6 on a dataset, with the run's behavior model and IQL critic."""
    gc = p.validation.gradient_variance
    record = gv.measure_task(
        p.run_config(task, seed),
        dataset(p, task).transitions,
        p.upstream(task, seed),
        validation_scratch(p, "gradvar", task, f"seed{seed}"),
        device=p.device,
        fractions=tuple(gc.fractions),
        n_samples=gc.n_samples,
        reps=gc.bootstrap_reps,
        progress=sys.stderr.isatty(),
    )
    artifacts.write_json(p.validation_dir / "gradvar" / task / f"seed{seed}.json", record)


def step_bandit_ablation(p: PipelineParams) -> None:
    """The reference and every SRPO focus variant on the ablation bandits (exact-surrogate optimum)."""
    ref = p.report.reference_variant
    names = [ref, *[v for v in (p.focus.variants if p.focus else {}) if p.variant_spec(v).method == "srpo"]]
    records = []
    for shape in p.validation.bandit_ablation.bandits:
        for seed in p.seeds:
            work = validation_scratch(p, "ablation", shape, f"seed{seed}")
            variants = {v: bandit_config(p, shape, seed, v) for v in names}
            records.append(
                ablation_record(
                    shape,
                    seed,
                    bandit_config(p, shape, seed, ref),
                    variants,
                    work,
                    progress=sys.stderr.isatty(),
                )
            )
            print(f"bandit ablation {shape} seed {seed}: done", flush=True)
    artifacts.write_json(p.validation_dir / "bandit_ablation.json", {"reference": ref, "records": records})


def _diagnostics(p: PipelineParams):
    if p.validation is None:
        raise ValueError(f"{p.source} has no validation section; the diagnostics read validation.diagnostics")
    return p.validation.diagnostics


def step_diagnose(p: PipelineParams, task: str) -> None:
    """Diagnostics of every run of ``task``: held-out critic accuracy, each trained policy's support and
    extraction; one JSON per seed.

    One process for all seeds (the start-up costs more than a seed's diagnostics at small budgets).
    Every variant of the task whose policy is a network (SRPO and its ablations, BC, IQL-AWR; not the
    diffusion-selection baseline, which has no policy of its own) is diagnosed at its final step and
    at each snapshot its policy stage left in ``<seed dir>/snapshots``.
    """
    dg = _diagnostics(p)
    if task not in p.tasks:
        raise ValueError(f"{task} is not a task of {p.source} (tasks {', '.join(p.tasks)})")
    data = dataset(p, task).transitions
    out = p.validation_dir / "diagnostics" / task
    for stale in out.glob("seed*.json"):  # seeds no longer in the params
        if stale.stem.removeprefix("seed") not in {str(s) for s in p.seeds}:
            stale.unlink()
    for seed in p.seeds:
        cfg = p.run_config(task, seed)
        if dg.critic_steps is not None:
            cfg = dataclasses.replace(cfg, critic=dataclasses.replace(cfg.critic, steps=dg.critic_steps))
        variants = {
            v: (p.run_config(task, seed, v), p.variant_path(task, seed, v))
            for v in p.variants_of(task)
            if p.variant_spec(v).method != "diffusion"
        }
        record = diag.task_record(
            task,
            seed,
            data,
            cfg,
            variants,
            p.upstream(task, seed),
            validation_scratch(p, "diagnostics", task, f"seed{seed}"),
            dg.heldout_fraction,
            dg.critic_points,
            dg.convergence_tol,
            dg.n_states,
            dg.k_states,
            tuple(dg.t_grid),
            device=p.device,
        )
        artifacts.write_json(out / f"seed{seed}.json", record)
        h = record["critic_heldout"]
        print(
            f"{task} seed {seed}: held-out critic Q Spearman {h['final']['q']['spearman']:.2f}, "
            f"converged {h['convergence']['converged']}",
            flush=True,
        )


def step_report(p: PipelineParams) -> None:
    path = write_report(p)
    print(f"report written to {path}")
