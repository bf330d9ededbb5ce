"""Find a Vulkan driver for SAPIEN (ManiSkill3) before it is imported.

SAPIEN needs a Vulkan device even for state-only environments. On CPU-only machines the
project installs a recent Mesa lavapipe with ``scripts/setup_vulkan.sh`` (``make setup``) into
``<venv>/vulkan/``; :func:`ensure_vulkan_icd` points the Vulkan loader at it.
"""

from __future__ import annotations

import glob
import json
import os
import sys
from pathlib import Path

__all__ = ["ensure_vulkan_icd", "private_icd_path"]

_ICD_ENV_VARS = ("VK_ICD_FILENAMES", "VK_DRIVER_FILES")
_SYSTEM_ICD_DIRS = (
    "/etc/vulkan/icd.d",
    "/usr/local/share/vulkan/icd.d",
    "/usr/share/vulkan/icd.d",
)
# Oldest lavapipe API version known to work with SAPIEN 3 (Debian 12's Mesa 22.3 reports 1.1/1.3.230
# and fails with "Failed to find a supported physical device"; Mesa 25 reports 1.4.x).
_MIN_LAVAPIPE_API = (1, 3, 255)

_FIX = (
    "Install the CPU Vulkan driver with `make setup` (or `scripts/setup_vulkan.sh <venv prefix>`), "
    "or point VK_ICD_FILENAMES at a working Vulkan ICD json."
)


def private_icd_path(prefix: str | os.PathLike | None = None) -> Path:
    """The ICD json written by scripts/setup_vulkan.sh for ``prefix`` (default: sys.prefix)."""
    return Path(prefix if prefix is not None else sys.prefix) / "vulkan" / "lvp_icd.json"


def _icd_library(icd_json: Path) -> tuple[str, tuple[int, ...]]:
    data = json.loads(icd_json.read_text())
    icd = data.get("ICD", {})
    version = tuple(int(x) for x in str(icd.get("api_version", "0")).split(".") if x.isdigit())
    return str(icd.get("library_path", "")), version


def _usable_system_icd() -> str | None:
    """A system ICD json that plausibly gives SAPIEN a device, or None."""
    have_dri = bool(glob.glob("/dev/dri/renderD*"))
    for d in _SYSTEM_ICD_DIRS:
        for path in sorted(Path(d).glob("*.json")):
            try:
                lib, version = _icd_library(path)
            except (OSError, ValueError):
                continue
            name = path.name + " " + os.path.basename(lib)
            if "lvp" in name:
                if version >= _MIN_LAVAPIPE_API:
                    return str(path)
            elif any(k in name for k in ("intel", "radeon", "nouveau", "virtio", "gfxstream")):
                if have_dri:
                    return str(path)
            else:  # vendor drivers (nvidia, ...)
                return str(path)
    return None


def ensure_vulkan_icd(prefix: str | os.PathLike | None = None) -> str:
    """Make sure the Vulkan loader will find a usable driver; call before importing sapien.

    - ``VK_ICD_FILENAMES`` / ``VK_DRIVER_FILES`` already set: checked to name existing files.
    - else ``<prefix>/vulkan/lvp_icd.json`` (prefix defaults to ``sys.prefix``) exists: exported
      as ``VK_ICD_FILENAMES``.
    - else a usable system driver (a vendor GPU driver or a recent lavapipe) is accepted as is.

    Returns a short description of the driver chosen. Raises RuntimeError when none is found.
    """
    for var in _ICD_ENV_VARS:
        value = os.environ.get(var, "")
        if value:
            files = [f for f in value.split(os.pathsep) if f]
            missing = [f for f in files if not os.path.isfile(f)]
            if missing:
                raise RuntimeError(f"{var} names missing Vulkan ICD file(s) {missing}. {_FIX}")
            return f"{var}={value}"

    icd = private_icd_path(prefix)
    if icd.is_file():
        lib, _ = _icd_library(icd)
        if not os.path.isfile(lib):
            raise RuntimeError(
                f"{icd} names {lib}, which does not exist (moved venv?). Delete {icd.parent} and "
                f"run the setup again. {_FIX}"
            )
        os.environ["VK_ICD_FILENAMES"] = str(icd)
        return f"VK_ICD_FILENAMES={icd}"

    system = _usable_system_icd()
    if system is not None:
        return f"system ICD {system}"
    raise RuntimeError(
        f"No usable Vulkan driver found for SAPIEN/ManiSkill (looked for {icd} and a GPU driver or a "
        f"lavapipe >= {'.'.join(map(str, _MIN_LAVAPIPE_API))} in {', '.join(_SYSTEM_ICD_DIRS)}). {_FIX}"
    )
