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
