#!/usr/bin/env bash
# Install a CPU Vulkan driver (Mesa lavapipe) that SAPIEN / ManiSkill3 can use.
#
# Debian 12's own lavapipe (Mesa 22.3) is too old for SAPIEN ("Failed to find a supported
# physical device"). This script:
#   1. installs Debian's mesa-vulkan-drivers + libvulkan1 (for the Vulkan loader and the
#      driver's run-time dependencies) and patchelf;
#   2. downloads mesa-vulkan-drivers, libdrm2 and libdrm-amdgpu1 from the distro's own
#      bookworm-backports suite with a PRIVATE apt state (the system's apt sources, lists and
#      cache are untouched), built from the mirror URI already configured on this machine;
#   3. unpacks them under PREFIX/vulkan/root, points the private libvulkan_lvp.so at the private
#      newer libdrm (DT_RPATH via patchelf), and writes PREFIX/vulkan/lvp_icd.json.
#
# Usage: scripts/setup_vulkan.sh [PREFIX]        (default PREFIX: <repo>/.venv)
# Then:  export VK_ICD_FILENAMES=PREFIX/vulkan/lvp_icd.json
#        (lrm_ros.sim.vulkan.ensure_vulkan_icd() does this for <sys.prefix>/vulkan).
# Idempotent: returns immediately when the ICD json and the library already exist.
set -euo pipefail

REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PREFIX="${1:-$REPO_DIR/.venv}"
mkdir -p "$PREFIX"
PREFIX="$(cd "$PREFIX" && pwd)"
VK_DIR="$PREFIX/vulkan"
ROOT_DIR="$VK_DIR/root"
ICD_JSON="$VK_DIR/lvp_icd.json"
LVP_LIB="$ROOT_DIR/usr/lib/x86_64-linux-gnu/libvulkan_lvp.so"
SUITE="${VULKAN_BACKPORTS_SUITE:-bookworm-backports}"

log() { echo "[setup_vulkan] $*"; }

if [[ -f "$ICD_JSON" && -f "$LVP_LIB" ]]; then
    log "already installed: $ICD_JSON"
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
SUDO=""
if [[ "$(id -u)" != "0" ]]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; else
        log "error: must run as root (or with passwordless sudo) to apt-get install"; exit 1
    fi
fi

# ---- 1. system packages ----------------------------------------------------------------
SYS_PKGS=(mesa-vulkan-drivers libvulkan1 patchelf)
missing=()
for p in "${SYS_PKGS[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done
if ((${#missing[@]})); then
    log "apt-get install ${missing[*]}"
    if ! $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null >/dev/null; then
        log "apt-get update"
        $SUDO apt-get update -q </dev/null >/dev/null
        $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null >/dev/null
    fi
fi

# ---- 2. private apt state for the backports suite ---------------------------------------
# The mirror URI and keyring come from this machine's own apt configuration.
MIRROR=""
KEYRING=""
shopt -s nullglob
for f in /etc/apt/sources.list.d/*.sources; do
    # deb822 stanzas: take the first stanza whose Suites include plain "bookworm"
    read -r MIRROR KEYRING < <(awk '
        function flush() { if (uri != "" && has) { print uri, key; found=1; exit } uri=""; key=""; has=0 }
        /^[[:space:]]*$/ { flush(); next }
        /^[[:space:]]*#/ { next }
        tolower($1) == "uris:" { uri=$2 }
        tolower($1) == "signed-by:" { key=$2 }
        tolower($1) == "suites:" { for (i = 2; i <= NF; i++) if ($i == "bookworm") has=1 }
        END { if (!found) flush() }' "$f") || true
    [[ -n "$MIRROR" ]] && break
done
shopt -u nullglob
if [[ -z "$MIRROR" && -f /etc/apt/sources.list ]]; then
    MIRROR="$(awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { if ($(i+1) == "bookworm") { print $i; exit } } }' /etc/apt/sources.list)"
fi
if [[ -z "$MIRROR" ]]; then
    log "error: no Debian bookworm mirror found in /etc/apt/sources.list.d/*.sources or /etc/apt/sources.list"
    exit 1
fi
[[ -n "$KEYRING" && -f "$KEYRING" ]] || KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
log "backports from the configured mirror ($SUITE)"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/setup_vulkan.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/lists/partial" "$WORK/cache/archives/partial" "$WORK/parts" "$WORK/debs" "$WORK/prefs"
echo "deb [signed-by=$KEYRING] $MIRROR $SUITE main" >"$WORK/sources.list"
APT_OPTS=(
    -o "Dir::Etc::SourceList=$WORK/sources.list"
    -o "Dir::Etc::SourceParts=$WORK/parts"
    -o "Dir::Etc::Preferences=$WORK/prefs/none"
    -o "Dir::Etc::PreferencesParts=$WORK/prefs"
    -o "Dir::State::Lists=$WORK/lists"
    -o "Dir::Cache=$WORK/cache"
    -o "Dir::Cache::pkgcache=" -o "Dir::Cache::srcpkgcache="
    -o "APT::Default-Release=$SUITE"
    -o "Debug::NoLocking=1"
)
# The private folders belong to this user: let apt download as this user, not as _apt.
[[ "$(id -u)" == "0" ]] && APT_OPTS+=(-o "APT::Sandbox::User=root")
log "apt-get update (private state)"
apt-get "${APT_OPTS[@]}" update -q </dev/null >/dev/null
PKGS=(mesa-vulkan-drivers libdrm2 libdrm-amdgpu1)
log "apt-get download ${PKGS[*]}"
(cd "$WORK/debs" && apt-get "${APT_OPTS[@]}" download -q "${PKGS[@]}" </dev/null >/dev/null)

# ---- 3. unpack, fix the library search path, write the ICD -----------------------------
rm -rf "$ROOT_DIR.tmp"
mkdir -p "$ROOT_DIR.tmp"
for deb in "$WORK"/debs/*.deb; do
    log "unpack $(basename "$deb")"
    dpkg-deb -x "$deb" "$ROOT_DIR.tmp"
done
LIBDIR_TMP="$ROOT_DIR.tmp/usr/lib/x86_64-linux-gnu"
[[ -f "$LIBDIR_TMP/libvulkan_lvp.so" ]] || { log "error: libvulkan_lvp.so not in the downloaded packages"; exit 1; }
# DT_RPATH (not RUNPATH): also used for the dependencies of the dependencies (libdrm_amdgpu ->
# libdrm), and searched before LD_LIBRARY_PATH. $ORIGIN keeps the folder relocatable.
for lib in "$LIBDIR_TMP"/libvulkan_*.so "$LIBDIR_TMP"/libdrm*.so.*; do
    [[ -f "$lib" && ! -L "$lib" ]] || continue
    patchelf --force-rpath --set-rpath '$ORIGIN' "$lib"
done
rm -rf "$ROOT_DIR"
mv "$ROOT_DIR.tmp" "$ROOT_DIR"

# Missing shared libraries would only show up when Vulkan loads the driver: check now.
if ldd "$LVP_LIB" | grep -q "not found"; then
    log "error: libvulkan_lvp.so has unresolved dependencies:"
    ldd "$LVP_LIB" | grep "not found" >&2
    exit 1
fi

API_VERSION="$(sed -n 's/.*"api_version"[[:space:]]*:[[:space:]]*"\([^"]*\)".*/\1/p' \
    "$ROOT_DIR"/usr/share/vulkan/icd.d/lvp_icd*.json 2>/dev/null | head -n1)"
cat >"$ICD_JSON.tmp" <<EOF
{
    "file_format_version": "1.0.0",
    "ICD": {
        "library_path": "$LVP_LIB",
        "api_version": "${API_VERSION:-1.3.0}"
    }
}
EOF
mv "$ICD_JSON.tmp" "$ICD_JSON"
log "done: export VK_ICD_FILENAMES=$ICD_JSON"
