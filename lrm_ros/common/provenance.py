"""Where a result came from: the git revision of the code that produced it, for the records
benchmarks and training runs write (bench/results/*.json, checkpoint meta)."""
import subprocess
from pathlib import Path

_HERE = Path(__file__).resolve().parent


def git_revision(short: bool = True, mark_dirty: bool = True) -> str:
    """HEAD of the checkout this package runs from, with "+dirty" when tracked files differ
    from it; "" when it is not a git checkout (an installed wheel) or git is missing."""
    try:
        rev = subprocess.run(["git", "rev-parse", *(["--short"] if short else []), "HEAD"], cwd=_HERE,
                             capture_output=True, text=True, check=True).stdout.strip()
        if mark_dirty and subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                         cwd=_HERE, capture_output=True, text=True).stdout.strip():
            rev += "+dirty"
        return rev
    except (OSError, subprocess.CalledProcessError):
        return ""
