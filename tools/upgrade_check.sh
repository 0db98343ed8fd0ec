#!/usr/bin/env bash
# `make upgrade-check`: what would the next `make lock` break? Installs the newest versions that
# pyproject.toml's ranges allow into a scratch env (the project's .venv is not touched), prints every
# package whose version differs from requirements.lock, then runs the quick tests (not slow, not slurm)
# on them and prints which failed. Exit status: the tests'.
set -uo pipefail
cd "$(dirname "$0")/.."
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
python3 -m venv "$scratch/venv"
py="$scratch/venv/bin/python"
echo "== installing the newest versions pyproject.toml allows"
"$py" -m pip install -q --no-compile --upgrade --upgrade-strategy eager -e '.[test]' 2>&1 | grep -v "is ignored" || true
echo "== packages that moved (requirements.lock -> newest allowed)"
"$py" -m pip freeze --exclude-editable > "$scratch/freeze.txt"
"$py" - "$scratch/freeze.txt" <<'PY'
import re, sys
from packaging.utils import canonicalize_name as c

def pins(path):
    out = {}
    for line in open(path):
        m = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s;#]+)", line)
        if m:
            out[c(m.group(1))] = m.group(2).split("+")[0]  # a local label (+cpu) is the same release
    return out

lock, new = pins("requirements.lock"), pins(sys.argv[1])
for tool in ("pip", "setuptools"):  # the venv's own installers: pip freeze leaves them out
    lock.pop(tool, None), new.pop(tool, None)
moved = sorted(k for k in lock.keys() | new.keys() if lock.get(k) != new.get(k))
for k in moved:
    print(f"  {k}: {lock.get(k, '(absent)')} -> {new.get(k, '(absent)')}")
print(f"  {len(moved)} moved, {len(lock.keys() & new.keys()) - len([k for k in moved if k in lock and k in new])} unchanged")
PY
echo "== quick tests on the newest versions (pytest -m 'not slow and not slurm')"
"$py" -m pytest -q -ra -p no:cacheprovider -m "not slow and not slurm" 2>&1 | tee "$scratch/pytest.txt" | grep -E "^(FAILED|ERROR)|passed|failed" 
status=${PIPESTATUS[0]}
[ "$status" = 0 ] && echo "== no quick test fails on the newest versions" || echo "== some quick tests fail on the newest versions (above): fix them before make lock"
exit "$status"
