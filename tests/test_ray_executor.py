"""The Ray executor on toy DVC pipelines: edges kept, stages in parallel, DVC the record, failures reported.

One local Ray instance with 2 CPUs serves the module (its start-up is most of the time).
"""

import sys
import textwrap
from pathlib import Path

import pytest
import yaml

ray = pytest.importorskip("ray")
from dvc.repo import Repo, lock_repo  # noqa: E402

from srpo_bench.pipeline import ray_executor  # noqa: E402
from srpo_bench.pipeline.cli import main as pipeline_main  # noqa: E402

PY = sys.executable


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=100 * 1024**2)
    yield
    ray.shutdown()


def _script(path: Path, body: str) -> str:
    path.write_text(textwrap.dedent(body))
    return f"{PY} {path.name}"


def _toy_repo(root: Path, stages: dict) -> Path:
    Repo.init(str(root), no_scm=True).close()
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}, sort_keys=False))
    return root


def _diamond(root: Path) -> Path:
    """a -> (b, c) -> d. b and c each wait for the other to have started: they pass only if run at once."""
    _script(root / "a.py", "open('a.txt', 'w').write('3')\n")
    wait = """
        import pathlib, sys, time
        me, other = sys.argv[1], sys.argv[2]
        pathlib.Path(f'{me}.started').touch()
        deadline = time.time() + 30
        while not pathlib.Path(f'{other}.started').exists():
            if time.time() > deadline:
                sys.exit(f'{other} never started while {me} ran: the stages ran one at a time')
            time.sleep(0.05)
        a = int(open('a.txt').read())
        open(f'{me}.txt', 'w').write(str(a * (2 if me == 'b' else 5)))
    """
    _script(root / "wait.py", wait)
    _script(
        root / "d.py",
        "open('d.txt', 'w').write(str(int(open('b.txt').read()) + int(open('c.txt').read())))\n",
    )
    return _toy_repo(
        root,
        {
            "a": {"cmd": f"{PY} a.py", "deps": ["a.py"], "outs": ["a.txt"]},
            "b": {"cmd": f"{PY} wait.py b c", "deps": ["wait.py", "a.txt"], "outs": ["b.txt"]},
            "c": {"cmd": f"{PY} wait.py c b", "deps": ["wait.py", "a.txt"], "outs": ["c.txt"]},
            "d": {
                "cmd": f"{PY} d.py",
                "deps": ["d.py", "b.txt", "c.txt"],
                "outs": [{"d.txt": {"persist": True}}],
            },
        },
    )


def _plan(root: Path) -> list[str]:
    with Repo(str(root)) as repo, lock_repo(repo):
        the_plan, _ = ray_executor.plan(repo, "dvc.yaml")
    return [s.name for s in the_plan.stages]


def test_diamond_runs_in_parallel_in_order_and_dvc_records_every_stage(tmp_path, local_ray):
    root = _diamond(tmp_path)
    assert _plan(root)[0] == "a" and _plan(root)[-1] == "d"
    summary = ray_executor.run(root=root, echo=lambda _: None)
    assert [o.status for o in summary.outcomes] == ["recorded"] * 4, summary.render()
    assert (root / "d.txt").read_text() == str(3 * 2 + 3 * 5)  # d ran after both b and c
    lock = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    assert set(lock) == {"a", "b", "c", "d"}
    assert lock["d"]["outs"][0]["md5"] == "3c59dc048e8850243be8079a5c74d079"  # md5("21")
    with Repo(str(root)) as repo:
        assert repo.status() == {}
    assert _plan(root) == []  # a second run runs nothing
    # A changed dependency reruns that stage and everything downstream of it, nothing upstream.
    (root / "wait.py").write_text((root / "wait.py").read_text() + "\n")
    assert _plan(root) == ["b", "c", "d"] or _plan(root) == ["c", "b", "d"]


def test_a_failing_stage_is_retried_a_bounded_number_of_times_and_reported(
    tmp_path, local_ray, capsys, monkeypatch
):
    fail = "import sys; open('attempts', 'a').write('x'); sys.exit('boom: no data for hopper')\n"
    _script(tmp_path / "bad.py", fail)
    _script(tmp_path / "good.py", "open('good.txt', 'w').write('ok')\n")
    root = _toy_repo(
        tmp_path,
        {
            "bad": {"cmd": f"{PY} bad.py", "deps": ["bad.py"], "outs": ["bad.txt"]},
            "after": {"cmd": f"{PY} good.py", "deps": ["bad.txt"], "outs": ["after.txt"]},
            "good": {"cmd": f"{PY} good.py", "deps": ["good.py"], "outs": ["good.txt"]},
        },
    )
    monkeypatch.chdir(root)
    code = pipeline_main(["run", "--retries", "1", "--dvc-file", "dvc.yaml"])
    out = capsys.readouterr().out
    assert code == 1
    assert (root / "attempts").read_text() == "xx"  # the first attempt and one retry
    assert "bad: failed:" in out and "boom: no data for hopper" in out, out
    assert "after: not run: upstream bad not recorded" in out, out
    lock = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    assert set(lock) == {"good"}  # nothing half-done is recorded


@pytest.mark.parametrize(
    "kind, device, threads, override, gpus, cpus_want, gpus_want",
    [
        ("behavior", "cpu", 0, None, 1.0, 1, 0),  # torch's default threads: capped at 1 per stage
        ("behavior", "cpu", 4, None, 1.0, 4, 0),  # the params file's threads
        ("critic", "cuda", 0, 2, 0.5, 2, 0.5),  # --threads-per-stage wins; half a GPU
        ("policy", "cuda:0", 0, None, 1.0, 1, 1),
        ("report", "cuda", 0, None, 1.0, 1, 0),  # the report reads JSON: no GPU
        ("evaluate", "cuda", 0, None, 2.0, 1, 2),  # whole GPUs
    ],
)
def test_stage_resources(kind, device, threads, override, gpus, cpus_want, gpus_want):
    r = ray_executor.stage_resources(kind, device, threads, override, gpus)
    assert (r.num_cpus, r.num_gpus) == (cpus_want, gpus_want)


@pytest.mark.parametrize("gpus, threads", [(0.0, None), (1.5, None), (1.0, 0)])
def test_stage_resources_refuse_what_ray_cannot_place(gpus, threads):
    with pytest.raises(ValueError, match="--gpus-per-stage must be|--threads-per-stage must be"):
        ray_executor.stage_resources("behavior", "cuda", 0, threads, gpus)


def test_plain_commands_are_execd_and_shell_ones_go_through_sh():
    assert ray_executor._argv("python -m srpo_bench.pipeline report --params p.yaml") == [
        "python",
        "-m",
        "srpo_bench.pipeline",
        "report",
        "--params",
        "p.yaml",
    ]
    assert ray_executor._argv("make a && echo $HOME") == ["/bin/sh", "-c", "make a && echo $HOME"]


# --- The smoke pipeline at test sizes: Ray with 2 workers against a sequential `dvc repro` (slow). ---

SMOKE = "pipelines/smoke/dvc.yaml"
# Left out: wall-clock records, and the process-global torch RNG state a checkpoint also saves. Training
# never draws from the global RNG (model init forks and reseeds it, srpo.stage_loop.seeded_global_rng;
# every draw of a stage comes from its own generator, "generator", which is compared), but what the
# process did before training moves it, differently from one process to the next.
TIMING_KEYS = {"elapsed_s", "wall_s", "action_latency", "seconds", "torch_rng"}


def _digest(obj) -> object:
    """Every tensor as (dtype, shape, sha256 of its bytes), every other value as is, timings dropped."""
    import hashlib

    import torch

    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        return (
            str(t.dtype),
            tuple(t.shape),
            hashlib.sha256(t.reshape(-1).view(torch.uint8).numpy().tobytes()).hexdigest(),
        )
    if isinstance(obj, dict):
        return {k: _digest(v) for k, v in obj.items() if k not in TIMING_KEYS}
    if isinstance(obj, (list, tuple)):
        return [_digest(v) for v in obj]
    return obj


def _results(run_dir: Path) -> dict[str, object]:
    """Checkpoints (every tensor hashed) and evaluation scores under a run directory."""
    import json

    from srpo import artifacts

    out: dict[str, object] = {}
    for f in sorted(run_dir.rglob("*.pt")):
        out[str(f.relative_to(run_dir))] = _digest(artifacts.load_torch(f))
    for f in sorted(run_dir.rglob("evaluation/*/seed*.json")):
        out[str(f.relative_to(run_dir))] = _digest(json.loads(f.read_text()))
    return out


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory, local_ray):
    from tests.test_pipeline import _copy_repo, _dvc, _shrink

    seq = _copy_repo(tmp_path_factory.mktemp("sequential"))
    _shrink(seq / "pipelines/smoke/params.yaml")
    _dvc(seq, "repro", SMOKE)
    par = _copy_repo(tmp_path_factory.mktemp("ray"))
    _shrink(par / "pipelines/smoke/params.yaml")
    summary = ray_executor.run(SMOKE, root=par, echo=lambda _: None)
    return seq, par, summary


@pytest.mark.slow
def test_smoke_pipeline_on_ray_equals_sequential_dvc_repro_bit_for_bit(smoke_runs):
    from tests.test_pipeline import _dvc, _ran

    seq, par, summary = smoke_runs
    assert not summary.failed and len(summary.outcomes) == 29, summary.render()
    expected, got = _results(seq / "runs/smoke"), _results(par / "runs/smoke")
    assert len(expected) == 2 * 8 + 2 * 6  # per seed: behavior, critic, 6 policies; 6 evaluations
    assert got.keys() == expected.keys()
    for name in expected:
        assert got[name] == expected[name], f"{name} differs between Ray and dvc repro"
    assert _results(par / "runs/smoke-validation") == _results(seq / "runs/smoke-validation")
    assert "Data and pipelines are up to date" in _dvc(par, "status", SMOKE)
    assert not _ran(_dvc(par, "repro", SMOKE))  # DVC's record is complete: nothing left to run


@pytest.mark.slow
def test_a_worker_killed_mid_stage_reruns_it_and_it_resumes_to_the_same_result(smoke_runs, tmp_path):
    import os
    import shutil
    import signal
    import threading
    import time

    from srpo import artifacts

    _, par, _ = smoke_runs
    repo = tmp_path / "kill"
    shutil.copytree(par, repo, symlinks=True)
    behavior = repo / "runs/smoke/hopper-medium/behavior"
    reference = {k: v for k, v in _results(behavior).items() if k.endswith(".pt")}
    shutil.rmtree(behavior)
    # Checkpoints every 10 of the 60 steps: a wide window to kill in between (the tensors do not
    # depend on how often they are saved; the history does, and is left out below).
    params = repo / "pipelines/smoke/params.yaml"
    p = yaml.safe_load(params.read_text())
    p["train"]["overrides"]["checkpoint_every"] = 10
    params.write_text(yaml.safe_dump(p, sort_keys=False))

    lines: list[str] = []
    result: dict = {}
    runner = threading.Thread(
        target=lambda: result.update(
            summary=ray_executor.run(f"{SMOKE}:behavior@hopper-medium", root=repo, echo=lines.append)
        )
    )
    runner.start()
    pidfile = repo / ".dvc/tmp/ray/pipelines_smoke_dvc.yaml__behavior@hopper-medium.pid"
    ckpt = behavior / "seed0/behavior.pt"
    deadline = time.time() + 600
    while not (ckpt.exists() and pidfile.exists()) and time.time() < deadline and runner.is_alive():
        time.sleep(0.01)
    worker, stage = map(int, pidfile.read_text().split())
    os.kill(worker, signal.SIGKILL)
    assert artifacts.load_torch(ckpt)["done"] is False, "the kill came after the stage had finished"
    for _ in range(500):  # the stage's process dies with its worker: no stray attempt races the retry
        try:
            os.kill(stage, 0)
        except ProcessLookupError:
            break
        time.sleep(0.01)
    else:
        raise AssertionError(f"stage process {stage} outlived its killed worker {worker}")
    runner.join(timeout=900)
    summary = result["summary"]
    assert [(o.status, o.attempts) for o in summary.outcomes] == [("recorded", 2)], summary.render()
    for name, digest in reference.items():
        got = _digest(artifacts.load_torch(behavior / name))
        for key in ("modules", "optimizer", "step", "done", "generator"):
            assert got[key] == digest[key], f"{name}: {key} differs after the kill and resume"
