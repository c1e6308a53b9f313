"""Run a DVC pipeline's stages as Ray tasks: independent stages in parallel, DVC still the record.

The mapping, and nothing more: DVC says which stages of a ``dvc.yaml`` are out of date and what
each depends on (:func:`plan`, from ``Repo.index.graph`` as ``dvc repro`` plans); every such stage
becomes one Ray task that runs the stage's command in its ``wdir`` with the resources it declares,
its upstream stages' tasks passed as arguments so that Ray starts it only once they have finished
(:func:`execute`). Ray schedules, places, retries. Only the driver touches DVC: it holds the
repository lock for the whole run and records each finished stage in ``dvc.lock`` itself, in
dependency order, exactly as ``dvc repro`` records a stage after its command (save the deps' and
outs' hashes, move the outs into the cache, dump the lock entry). A stage is recorded only when its
command succeeded and every upstream stage of this run was recorded, so nothing half-done lands in
``dvc.lock``; when the run ends, ``dvc status`` is clean and ``dvc repro`` runs nothing.

Retries: a command that exits non-zero is retried (``retry_exceptions``), a worker that dies is
retried (``max_retries``), both at most ``retries`` times; the pipeline's training stages resume
from their own checkpoints (``persist: true`` outs, :mod:`srpo.stage_loop`), so a retry continues
where the killed attempt stopped.

One difference from ``dvc repro``: a stage runs when it changed or when any stage upstream of it
runs (the plan is made before anything runs); ``dvc repro`` decides when the upstream has finished
and skips a stage whose inputs came out byte-identical. The results are the same.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from dvc.repo import Repo
    from dvc.stage import Stage

# Stages that do not touch the GPU even when the profile's device is CUDA (the report reads JSON).
CPU_ONLY_STAGES = frozenset({"report"})
LOG_DIR = Path(".dvc/tmp/ray")  # per-stage logs and pid files, relative to the repository root


@dataclass(frozen=True)
class StageResources:
    """What one stage asks Ray for: CPU threads and a GPU or a fraction of one."""

    num_cpus: float
    num_gpus: float


@dataclass(frozen=True)
class StageSpec:
    """One stage's Ray task: its DVC address, command, working directory and resources."""

    name: str  # DVC address, e.g. pipelines/smoke/dvc.yaml:behavior@hopper-medium
    root: str  # the repository root (absolute): DVC_ROOT for the command
    cmd: tuple[str, ...]  # the stage's command lines, run one after the other
    wdir: str  # absolute
    clear: tuple[str, ...]  # outs without `persist: true`: deleted before the command, as dvc repro does
    upstream: tuple[str, ...]  # stages of this run that must finish first
    resources: StageResources
    log: str  # absolute path of the stage's log file


@dataclass(frozen=True)
class Plan:
    """The stages to run (dependencies first) and those already up to date."""

    root: Path
    stages: tuple[StageSpec, ...]
    up_to_date: tuple[str, ...]


@dataclass
class StageOutcome:
    name: str
    status: str  # "recorded", "failed", "not run"
    seconds: float = 0.0
    attempts: int = 0
    reason: str = ""


@dataclass
class RunSummary:
    outcomes: list[StageOutcome] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def failed(self) -> list[StageOutcome]:
        return [o for o in self.outcomes if o.status != "recorded"]

    def render(self) -> str:
        ok = [o for o in self.outcomes if o.status == "recorded"]
        lines = [
            f"ray: {len(ok)} stage(s) ran and recorded in dvc.lock, {len(self.failed)} not "
            f"({self.wall_s:.1f} s)"
        ]
        if self.failed:
            lines.append("not recorded (dvc.lock keeps their previous state):")
            lines += [f"  {o.name}: {o.status}: {o.reason}" for o in self.failed]
        return "\n".join(lines)


class StageFailed(Exception):
    """A stage's command exited non-zero; the message ends with the tail of its output."""


def stage_resources(
    kind: str, device: str, threads: int, threads_per_stage: int | None, gpus_per_stage: float
) -> StageResources:
    """A stage's Ray resources from its profile: ``threads`` CPUs (at least 1), a GPU share on CUDA.

    ``threads`` is the params file's (0: torch's default, which we cap at one thread per stage so
    that N stages fit N cores); ``threads_per_stage`` overrides it. Every stage but the report
    trains or rolls out on the profile's device, so on ``cuda`` each asks for ``gpus_per_stage``.
    """
    if gpus_per_stage <= 0 or gpus_per_stage > 1 and gpus_per_stage != int(gpus_per_stage):
        raise ValueError(
            f"--gpus-per-stage must be a fraction in (0, 1] or a whole number, got {gpus_per_stage}"
        )
    cpus = threads_per_stage if threads_per_stage is not None else max(threads, 1)
    if cpus < 1:
        raise ValueError(f"--threads-per-stage must be at least 1, got {cpus}")
    gpu = gpus_per_stage if device.startswith("cuda") and kind not in CPU_ONLY_STAGES else 0.0
    return StageResources(num_cpus=float(cpus), num_gpus=float(gpu))


def _profile_settings(dvcfile_dir: Path) -> tuple[int, str]:
    """``threads`` and ``device`` from the params.yaml beside a dvc.yaml (0, cpu if there is none)."""
    path = dvcfile_dir / "params.yaml"
    raw = yaml.safe_load(path.read_text()) if path.exists() else None
    raw = raw if isinstance(raw, dict) else {}
    return int(raw.get("threads", 0) or 0), str(raw.get("device", "cpu"))


def _kind(stage: Stage) -> str:
    """A stage's name without its foreach/matrix item: ``behavior@hopper-medium`` -> behavior."""
    return stage.name.split("@", 1)[0]


def _address(stage: Stage, root: Path) -> str:
    """The stage's address as ``dvc repro`` takes it from the repository root (``stage.addressing`` is
    relative to the current directory)."""
    rel = os.path.relpath(stage.dvcfile.path, root)
    return stage.name if rel == "dvc.yaml" else f"{rel}:{stage.name}"


def plan(
    repo: Repo,
    dvc_file: str,
    *,
    threads_per_stage: int | None = None,
    gpus_per_stage: float = 1.0,
    force: bool = False,
) -> tuple[Plan, dict[str, Stage]]:
    """The stages ``dvc repro DVC_FILE`` would consider, those out of date, and their edges.

    Call with the repository lock held. Returns the plan and the DVC stage objects by address
    (the driver records them with these objects). A stage runs when ``stage.changed()`` says so
    (its command, deps, params or outs differ from dvc.lock), when anything upstream of it runs,
    or with ``force``; frozen stages never run.
    """
    import networkx as nx
    from dvc.repo.reproduce import collect_stages, get_active_graph, plan_repro

    root = Path(repo.root_dir)
    path, colon, stage_name = dvc_file.partition(":")
    if not (root / path).exists():
        raise FileNotFoundError(
            f"{path} not found in {root}: pass --dvc-file, e.g. pipelines/smoke/dvc.yaml "
            "(or FILE:STAGE for one stage and what it depends on)"
        )
    target = f"{root / path}{colon}{stage_name}"  # DVC resolves a relative target against the cwd
    graph = get_active_graph(repo.index.graph)
    order = plan_repro(graph, collect_stages(repo, [target]))  # dependencies first
    runs: set[Stage] = set()
    specs, up_to_date, by_name = [], [], {}
    settings: dict[Path, tuple[int, str]] = {}
    for stage in order:
        if not stage.cmd:  # a data source (`.dvc` file): nothing to run
            continue
        upstream = [u for u in nx.descendants(graph, stage) if u in runs]
        direct = [u for u in graph.successors(stage) if u in runs]
        if stage.frozen or not (force or upstream or stage.changed()):
            up_to_date.append(_address(stage, root))
            continue
        runs.add(stage)
        by_name[_address(stage, root)] = stage
        dvcdir = Path(stage.dvcfile.path).parent
        if dvcdir not in settings:
            settings[dvcdir] = _profile_settings(dvcdir)
        threads, device = settings[dvcdir]
        cmd = stage.cmd if isinstance(stage.cmd, list) else [stage.cmd]
        specs.append(
            StageSpec(
                name=_address(stage, root),
                root=str(root),
                cmd=tuple(cmd),
                wdir=str(Path(stage.wdir).resolve()),
                clear=tuple(str(o.fs_path) for o in stage.outs if not o.persist),
                upstream=tuple(_address(u, root) for u in direct),
                resources=stage_resources(_kind(stage), device, threads, threads_per_stage, gpus_per_stage),
                log=str(
                    root / LOG_DIR / (_address(stage, root).replace("/", "_").replace(":", "__") + ".log")
                ),
            )
        )
    return Plan(root=root, stages=tuple(specs), up_to_date=tuple(up_to_date)), by_name


def _die_with_parent() -> None:
    """In the child: SIGKILL me when the Ray worker that started me dies (Linux), so that a retry
    never races a stray attempt over the same checkpoints."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _argv(line: str) -> list[str]:
    """A command line as an argv: exec'd directly when it is a plain command (so that the process the
    worker started is the stage itself), through ``sh -c`` when it uses the shell."""
    if any(ch in line for ch in "|&;<>()$`*?~\n\\\"'"):
        return ["/bin/sh", "-c", line]
    return shlex.split(line)


def run_stage_command(spec: StageSpec, *upstream_done: Any) -> dict[str, Any]:
    """The Ray task: delete the stage's non-persistent outs, run its command lines in its wdir.

    ``upstream_done`` are the upstream tasks' results: Ray passes them only once those tasks have
    succeeded, which is how the DVC edges become Ray's. The venv running this worker comes first on
    PATH (the Makefile's DVC variable does the same for ``dvc repro``); OMP threads follow the
    stage's CPU share. Raises :class:`StageFailed` on a non-zero exit.
    """
    import shutil

    log = Path(spec.log)
    log.parent.mkdir(parents=True, exist_ok=True)
    for path in map(Path, spec.clear):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
    threads = str(max(1, int(spec.resources.num_cpus)))
    env = {
        **os.environ,  # CUDA_VISIBLE_DEVICES: Ray sets it to this task's GPU
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "OMP_NUM_THREADS": threads,
        "MKL_NUM_THREADS": threads,
        "DVC_ROOT": spec.root,
        "DVC_STAGE": spec.name,
        "PYTHONUNBUFFERED": "1",
    }
    t0 = time.perf_counter()
    with log.open("a") as out:
        out.write(f"--- attempt on {os.uname().nodename}, worker pid {os.getpid()}, {time.ctime()}\n")
        for line in spec.cmd:
            out.write(f"$ {line}\n")
            out.flush()
            proc = subprocess.Popen(
                _argv(line),
                cwd=spec.wdir,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )
            pidfile = log.with_suffix(".pid")
            pidfile.write_text(f"{os.getpid()} {proc.pid}\n")  # worker, stage (the kill test reads it)
            code = proc.wait()
            pidfile.unlink(missing_ok=True)
            if code != 0:
                out.flush()
                tail = [t for t in log.read_text().splitlines() if t.strip()][-3:]
                raise StageFailed(f"`{line}` exited with {code}: {' | '.join(tail)} (log: {log})")
    return {"name": spec.name, "seconds": time.perf_counter() - t0}


def _attempts(spec: StageSpec) -> int:
    log = Path(spec.log)
    return log.read_text().count("--- attempt on ") if log.exists() else 0


def _reason(exc: BaseException) -> str:
    import ray.exceptions as rex

    cause = getattr(exc, "cause", None)
    if isinstance(exc, StageFailed) or isinstance(cause, StageFailed):
        return str(cause if isinstance(cause, StageFailed) else exc).strip().splitlines()[-1]
    if isinstance(exc, (rex.WorkerCrashedError, rex.NodeDiedError)):
        return f"its Ray worker died on every attempt ({type(exc).__name__})"
    return f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}"


def _record(stage: Stage) -> None:
    """What ``dvc repro`` does after a stage's command: hash deps and outs, cache the outs, dump the lock.

    ``relink=False`` leaves the workspace files alone (no re-copy from the cache) while downstream
    stages may be reading them.
    """
    stage.save()
    stage.commit(relink=False)
    stage.dump(update_pipeline=False)


def execute(
    repo: Repo,
    the_plan: Plan,
    stages: dict[str, Stage],
    *,
    retries: int = 2,
    echo=print,
) -> RunSummary:
    """Submit every planned stage as a Ray task, record the finished ones in dvc.lock, in order.

    Ray must be initialized (:func:`run` does it). Call with the repository lock held.
    """
    import ray

    if retries < 0:
        raise ValueError(f"--retries must be 0 or more, got {retries}")
    summary = RunSummary()
    t0 = time.perf_counter()
    task = ray.remote(run_stage_command)
    for spec in the_plan.stages:
        for out in stages[spec.name].outs:
            if out.persist:
                out.unprotect()  # a linked (read-only) cache copy becomes a plain file the stage may write
        Path(spec.log).unlink(missing_ok=True)
    refs: dict[str, Any] = {}
    index = {spec.name: i for i, spec in enumerate(the_plan.stages)}
    for spec in the_plan.stages:
        refs[spec.name] = task.options(
            name=spec.name,
            num_cpus=spec.resources.num_cpus,
            num_gpus=spec.resources.num_gpus,
            max_retries=retries,
            retry_exceptions=[StageFailed],
        ).remote(spec, *(refs[u] for u in spec.upstream))
    by_ref = {ref: the_plan.stages[index[name]] for name, ref in refs.items()}
    pending = list(refs.values())
    outcome: dict[str, StageOutcome] = {}
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        more, pending = ray.wait(pending, num_returns=len(pending), timeout=0) if pending else ([], [])
        # Upstream before downstream: a stage is ready only after its upstream was, so sorting the
        # batch by plan order records dependencies first.
        for ref in sorted(ready + more, key=lambda r: index[by_ref[r].name]):
            spec = by_ref[ref]
            blocked = [u for u in spec.upstream if outcome[u].status != "recorded"]
            if blocked:
                result = StageOutcome(
                    spec.name, "not run", reason=f"upstream {', '.join(blocked)} not recorded"
                )
            else:
                try:
                    done = ray.get(ref)
                    _record(stages[spec.name])
                    result = StageOutcome(spec.name, "recorded", done["seconds"], _attempts(spec))
                except StageFailed as exc:
                    result = StageOutcome(spec.name, "failed", attempts=_attempts(spec), reason=_reason(exc))
                except Exception as exc:  # noqa: BLE001 - a dead worker, an unrecordable stage: report it
                    result = StageOutcome(spec.name, "failed", attempts=_attempts(spec), reason=_reason(exc))
            outcome[spec.name] = result
            summary.outcomes.append(result)
            echo(
                f"{result.status:>8}  {spec.name}"
                + (
                    f"  ({result.seconds:.1f} s, attempt {result.attempts})"
                    if result.status == "recorded"
                    else ""
                )
            )
    summary.wall_s = time.perf_counter() - t0
    return summary


def run(
    dvc_file: str = "dvc.yaml",
    *,
    root: str | Path = ".",
    address: str | None = None,
    jobs: int | None = None,
    retries: int = 2,
    threads_per_stage: int | None = None,
    gpus_per_stage: float = 1.0,
    force: bool = False,
    dry: bool = False,
    echo=print,
) -> RunSummary:
    """Plan, start (or join) Ray, execute, record. ``jobs``: CPUs of the local Ray instance."""
    try:
        import ray
    except ImportError:
        raise ValueError("ray is not installed: pip install -e '.[ray]' (make setup installs it)") from None
    from dvc.repo import Repo, lock_repo

    if address and jobs:
        raise ValueError("--jobs sizes a local Ray instance; with --address the cluster's own size applies")
    if jobs is not None and jobs < 1:
        raise ValueError(f"--jobs must be at least 1, got {jobs}")
    root = Path(root).resolve()
    # DVC resolves stage paths against the current directory (a stage dumps only from inside its repo).
    with contextlib.chdir(root), Repo(str(root)) as repo, lock_repo(repo):
        the_plan, stages = plan(
            repo,
            dvc_file,
            threads_per_stage=threads_per_stage,
            gpus_per_stage=gpus_per_stage,
            force=force,
        )
        echo(f"{len(the_plan.stages)} stage(s) to run, {len(the_plan.up_to_date)} up to date")
        if dry or not the_plan.stages:
            for spec in the_plan.stages:
                r = spec.resources
                echo(f"  {spec.name}  cpus={r.num_cpus:g} gpus={r.num_gpus:g}  after {list(spec.upstream)}")
            return RunSummary()
        started = not ray.is_initialized()
        if started:
            ray.init(
                address=address or "local",  # "local": a new instance even if RAY_ADDRESS is set
                num_cpus=None if address else (jobs or os.cpu_count()),
                include_dashboard=False,
                log_to_driver=False,
                **({} if address else {"object_store_memory": 200 * 1024**2}),
            )
        try:
            summary = execute(repo, the_plan, stages, retries=retries, echo=echo)
        finally:
            if started:
                ray.shutdown()
    echo(summary.render())
    return summary
