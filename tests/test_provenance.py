"""Provenance: the code version a result records."""

import subprocess

from srpo_bench.eval.provenance import git_revision


def _git(repo, *args):
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True, capture_output=True
    )


def test_git_revision_ignores_what_the_pipeline_rewrites_but_not_code(tmp_path):
    (tmp_path / "reports").mkdir()
    for f in ("code.py", "dvc.lock", "reports/report.md"):
        (tmp_path / f).write_text("a\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-qm", "x")
    clean = git_revision(tmp_path)
    assert clean and not clean.endswith("+dirty")
    (tmp_path / "dvc.lock").write_text("b\n")
    (tmp_path / "reports/report.md").write_text("b\n")
    assert git_revision(tmp_path) == clean
    (tmp_path / "code.py").write_text("b\n")
    assert git_revision(tmp_path) == clean + "+dirty"
