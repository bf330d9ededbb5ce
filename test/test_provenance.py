"""git_revision: what benchmarks and training runs record as the code that produced a result."""
import re
import subprocess

from lrm_ros.common import provenance


def test_revision_of_this_checkout_matches_git():
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=provenance._HERE, capture_output=True,
                          text=True, check=True).stdout.strip()
    full = provenance.git_revision(short=False, mark_dirty=False)
    assert full == head
    short = provenance.git_revision()
    assert re.fullmatch(r"[0-9a-f]{7,}(\+dirty)?", short) and head.startswith(short.split("+")[0])


def test_outside_a_checkout_the_revision_is_empty(tmp_path, monkeypatch):
    monkeypatch.setattr(provenance, "_HERE", tmp_path)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    assert provenance.git_revision() == ""
