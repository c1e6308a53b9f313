"""Every mistake of issue 21's table: one clear line on stderr, the documented exit code, nothing lost.

One table, ``CASES``: each row is the command (``srpo`` run in-process through ``main(argv)``), the
exit code, fragments its stderr must hold (and ones it must not), and the files that must be left
as they were. ``{tmp}``, ``{run}`` (a finished tiny run) and ``{ckpt}`` (a policy for 5-d
observations and 2-d actions, task hopper-medium) in the argv are filled in per test. Ctrl-C
needs a real signal and runs in a subprocess (``test_ctrl_c_says_where_and_exits_130``).

Exit codes: 2 for input the command refuses (before any work), 1 for a run that diverged,
130 for Ctrl-C, 0 otherwise.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from srpo import artifacts
from srpo.policy import DeterministicPolicy
from srpo_bench.cli import main as srpo
from srpo_bench.pipeline.cli import main as pipeline

TINY = {
    "behavior.steps": "10",
    "behavior.batch_size": "16",
    "behavior.width": "16",
    "behavior.n_blocks": "1",
    "critic.steps": "10",
    "critic.batch_size": "16",
    "critic.hidden": "16,16",
    "policy.steps": "10",
    "policy.batch_size": "16",
    "policy.hidden": "16,16",
    "log_every": "5",
    "checkpoint_every": "5",
}
SETS = [a for k, v in TINY.items() for a in ("--set", f"{k}={v}")]
TRAIN = ["train", "--no-progress", "--threads", "1", *SETS]
BANDIT = [*TRAIN, "--task", "bandit-ring8", "--profile", "smoke"]


@dataclass
class Case:
    argv: list[str]
    code: int
    says: list[str]
    never: list[str] = field(default_factory=list)
    untouched: str | None = None  # a placeholder ("{run}", "{ckpt}") whose files must stay as they were
    absent: str | None = None  # a path that must not exist afterwards
    main: object = srpo


def hdf5(path: Path, obs_dim: int = 11, act_dim: int = 3, reward: float = 1.0, n: int = 200) -> str:
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        f["observations"] = rng.normal(size=(n, obs_dim)).astype(np.float32)
        f["actions"] = rng.uniform(-1, 1, size=(n, act_dim)).astype(np.float32)
        f["rewards"] = np.full(n, reward, np.float32)
        f["terminals"] = np.zeros(n, np.float32)
        f["timeouts"] = (np.arange(n) % 50 == 49).astype(np.float32)
    return str(path)


CASES = {
    "set-lr-inf": Case(
        [*BANDIT, "--set", "critic.lr=inf", "--out", "{tmp}/out"],
        2,
        ["critic.lr", "(0, 1]"],
        absent="{tmp}/out",
    ),
    "set-lr-absurd": Case(
        [*BANDIT, "--set", "critic.lr=1e30", "--out", "{tmp}/out"],
        2,
        ["critic.lr must be in (0, 1], got 1e+30"],
        absent="{tmp}/out",
    ),
    "nonfinite-loss-names-only-existing-files": Case(
        # rewards of 3e38 (finite, the float32 limit) overflow the critic's TD target at once
        [*TRAIN, "--task", "hopper-medium", "--set", "reward_mode=none", "--stage", "critic"]
        + ["--dataset", "{huge}", "--out", "{tmp}/out"],
        1,
        ["critic:", "became non-finite by step 5", "no checkpoint of this stage was written"],
        never=["critic.pt"],
    ),
    "evaluate-other-shapes": Case(
        ["evaluate", "--checkpoint", "{ckpt}", "--episodes", "1"],
        2,
        ["observations of size 5 and actions of size 2", "Hopper-v5 has observations of size 11"],
        untouched="{ckpt}",
    ),
    "evaluate-unknown-env": Case(
        ["evaluate", "--checkpoint", "{ckpt}", "--env", "Hoper-v5", "--episodes", "1"],
        2,
        ["--env Hoper-v5", "Did you mean: `Hopper`?"],
        untouched="{ckpt}",
    ),
    "out-read-only": Case(
        [*BANDIT, "--out", "/proc/self/srpo-run"],
        2,
        ["--out /proc/self/srpo-run: cannot create files in /proc"],
    ),
    "device-cuda-without-cuda": Case(
        [*BANDIT, "--device", "cuda", "--out", "{tmp}/out"],
        2,
        ["device cuda is not available", "use cpu"],
        absent="{tmp}/out",
    ),
    "device-typo": Case(
        [*BANDIT, "--device", "cdua", "--out", "{tmp}/out"], 2, ["--device 'cdua'"], absent="{tmp}/out"
    ),
    "rerun-with-another-config": Case(
        [*BANDIT, "--seed", "1", "--out", "{run}"],
        2,
        ["behavior.pt was written by a run with a different behavior config"],
        untouched="{run}",
    ),
    "dataset-is-a-directory": Case(
        [*TRAIN, "--task", "hopper-medium", "--dataset", "{tmp}", "--out", "{tmp}/out"],
        2,
        ["is a directory", ".hdf5 file, a Minari dataset id", "--minari-root"],
        never=["minari download"],
        absent="{tmp}/out",
    ),
    "local-id-typo": Case(
        [*TRAIN, "--task", "hopper-medium", "--dataset", "srpo/hopper/mediun-v0", "--out", "{tmp}/out"],
        2,
        ["did you mean 'srpo/hopper/medium-v0'?", "srpo data make"],
        never=["minari download"],
        absent="{tmp}/out",
    ),
    "dataset-other-sizes": Case(
        [*TRAIN, "--task", "hopper-medium", "--dataset", "{small}", "--out", "{tmp}/out"],
        2,
        ["observations of size 5 and actions of size 2", "needs 11 and 3", "--allow-dim-mismatch"],
        absent="{tmp}/out",
    ),
    "pipeline-dataset-other-sizes": Case(
        ["train", "--params", "{mapped}", "--stage", "behavior", "--task", "hopper-medium"],
        2,
        ["observations of size 5 and actions of size 2", "needs 11 and 3", "datasets:"],
        main=pipeline,
        absent="{piperuns}",
    ),
    "params-check-valid": Case(
        ["check", "--params", "pipelines/smoke/params.yaml"], 0, [], main=pipeline
    ),  # prints its line on stdout
    "run-jobs-zero": Case(
        ["run", "--jobs", "0", "--dvc-file", "pipelines/smoke/dvc.yaml"],
        2,
        ["--jobs must be at least 1"],
        main=pipeline,
    ),
    "run-no-such-pipeline": Case(
        ["run", "--dvc-file", "pipelines/smok/dvc.yaml"],
        2,
        ["pipelines/smok/dvc.yaml not found", "--dvc-file, e.g. pipelines/smoke/dvc.yaml"],
        main=pipeline,
    ),
    "params-check-typo": Case(
        ["check", "--params", "{badparams}"],
        2,
        ["lacks key(s) seeds"],
        main=pipeline,
        untouched="{badparams}",
    ),
    "params-check-invalid-yaml": Case(
        ["check", "--params", "{badyaml}"],
        2,
        ["is not valid YAML at line 2, column 4", "expected ',' or ']'"],
        main=pipeline,
        untouched="{badyaml}",
    ),
}


def snapshot(path: Path) -> dict[str, bytes]:
    if path.is_file():
        return {path.name: path.read_bytes()}
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def places(tmp_path_factory):
    """What the cases refer to: a finished tiny bandit run, a policy checkpoint, datasets, params."""
    base = tmp_path_factory.mktemp("made")
    assert srpo([*BANDIT, "--out", str(base / "run")]) == 0
    ckpt = base / "ckpt"
    pi = DeterministicPolicy(5, 2, (8,))
    artifacts.save_torch(
        ckpt / "policy.pt",
        {
            "stage": "policy",
            "config": {"task": "hopper-medium", "policy": {"hidden": [8]}},
            "step": 1,
            "done": True,
            "modules": {"policy": pi.state_dict()},
        },
    )
    bad = base / "params.yaml"
    smoke = Path("pipelines/smoke/params.yaml").read_text()
    bad.write_text(smoke.replace("seeds:", "seedz:", 1))
    badyaml = base / "broken.yaml"  # an unclosed list: the parser stops at line 2, column 4
    badyaml.write_text("seeds: [0, 1\nfoo: : bar\n")
    small = hdf5(base / "small.hdf5", obs_dim=5, act_dim=2)
    mapped = base / "mapped.yaml"  # the smoke profile with hopper-medium mapped to a 5-d/2-d file
    mapped.write_text(
        smoke.replace("datasets: {}", f"datasets: {{hopper-medium: {small}}}", 1).replace(
            "run_dir: runs/smoke", f"run_dir: {base / 'pipe-runs'}", 1
        )
    )
    return {
        "run": str(base / "run"),
        "ckpt": str(ckpt),
        "huge": hdf5(base / "huge.hdf5", reward=3e38),
        "small": small,
        "badparams": str(bad),
        "badyaml": str(badyaml),
        "mapped": str(mapped),
        "piperuns": str(base / "pipe-runs"),
    }


@pytest.mark.parametrize("name", list(CASES))
def test_mistake_gets_one_line(name, places, tmp_path, capsys, monkeypatch):
    case = CASES[name]
    if name == "device-cuda-without-cuda" and torch.cuda.is_available():
        pytest.skip("this torch has CUDA")
    if name == "out-read-only" and not Path("/proc/self").is_dir():
        pytest.skip("needs /proc")
    if name == "local-id-typo":  # a store holding one of our datasets, without making one
        import minari

        monkeypatch.setattr(minari, "list_local_datasets", lambda: {"srpo/hopper/medium-v0": {}})
    fill = {**places, "tmp": str(tmp_path)}
    argv = [re.sub(r"\{(\w+)\}", lambda m: fill[m.group(1)], a) for a in case.argv]
    watched = Path(case.untouched.format(**fill)) if case.untouched else None
    before = snapshot(watched) if watched else None
    capsys.readouterr()
    assert case.main(argv) == case.code
    err = capsys.readouterr().err
    if case.code:
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1, err  # one line, no traceback
    for fragment in case.says:
        assert fragment in err, err
    for fragment in case.never:
        assert fragment not in err, err
    if name == "nonfinite-loss-names-only-existing-files":  # every file the message names exists
        for named in re.findall(r"(/\S+?\.pt)\b", err):
            assert Path(named).exists(), err
    if watched:
        assert snapshot(watched) == before
    if case.absent:
        assert not Path(case.absent.format(**fill)).exists()


def test_a_flag_overrides_the_size_check(places, tmp_path):
    argv = [*TRAIN, "--task", "hopper-medium", "--dataset", places["small"], "--stage", "behavior"]
    assert srpo([*argv, "--allow-dim-mismatch", "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "behavior.pt").exists()


@pytest.mark.parametrize("sub,foreign", [(["data", "make"], "--overlap"), (["bandit-suite"], "--overlap")])
def test_each_subcommand_offers_only_its_own_options(sub, foreign, capsys):
    with pytest.raises(SystemExit) as exc:
        srpo([*sub, "--help"])
    assert exc.value.code == 0
    assert foreign not in capsys.readouterr().out


def test_bandit_example_prints_a_short_summary(places, tmp_path, capsys):
    assert srpo([*BANDIT, "--out", str(tmp_path / "ring8")]) == 0
    out = capsys.readouterr().out
    assert len(out.splitlines()) <= 8, out
    assert "distance_to_optimum" in out and str(tmp_path / "ring8" / "metrics.json") in out
    assert "history" not in out and "{" not in out


def test_ctrl_c_says_where_and_exits_130(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "srpo_bench.cli", *BANDIT, "--set", "behavior.steps=100000"]
    cmd += ["--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # A terminal's Ctrl-C: the child must not inherit an ignored SIGINT (pytest-xdist workers ignore
    # it, and Python then installs no KeyboardInterrupt handler).
    proc = subprocess.Popen(
        cmd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.time() + 120
    while not (out / "behavior.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert re.search(r"interrupted in the behavior stage at step \d+ of 100000", err), err
    assert "Run the same command again to resume" in err and str(out / "behavior.pt") in err
