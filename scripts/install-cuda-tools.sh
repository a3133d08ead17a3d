#!/usr/bin/env bash
# Installs the pinned CUDA compiler tools that the kernels crate's checks use (NVRTC, ptxas,
# nvdisasm) from PyPI into target/cuda-tools/, and writes target/cuda-tools/env.sh with the
# variables that point at them. No GPU, driver or CUDA toolkit is needed.
#
#   bash scripts/install-cuda-tools.sh           # install (idempotent; a second run is a no-op)
#   . target/cuda-tools/env.sh                  # optional: the tests read env.sh themselves
#   cargo test -p gpucost-kernels
#
# Two CUDA 12 toolchains, because the PTX ISA version that a toolchain writes decides which
# drivers can load the PTX (kernels/README.md explains):
#   cuda-12.2  NVRTC + ptxas 12.2, PTX ISA 8.2: every module except mma_fp8; R535+ drivers load it.
#   cuda-12.4  NVRTC + ptxas 12.4, PTX ISA 8.4: mma_fp8 (mma.sync on e4m3 needs PTX ISA 8.4).
#   disasm     nvdisasm 13.2, to read the SASS of the cubins ptxas makes (no cu12 wheel exists).
#
# Environment: PYTHON (default python3), GPUCOST_CUDA_TOOLS_DIR (default target/cuda-tools).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
DEST="${GPUCOST_CUDA_TOOLS_DIR:-$PWD/target/cuda-tools}"
mkdir -p "$DEST"
DEST="$(cd "$DEST" && pwd)"

# Keep these pins in step with kernels/src/registry.rs (`Toolchain`) and kernels/README.md.
CUDA_12_2=(nvidia-cuda-nvrtc-cu12==12.2.140 nvidia-cuda-nvcc-cu12==12.2.140)
CUDA_12_4=(nvidia-cuda-nvrtc-cu12==12.4.127 nvidia-cuda-nvcc-cu12==12.4.131)
DISASM=(nvidia-cuda-nvdisasm==13.2.78)

# install_set NAME PACKAGE...: pip-installs the packages into $DEST/NAME unless the stamp file
# there already lists exactly these pins.
install_set() {
  local name="$1"; shift
  local dir="$DEST/$name" want="$*"
  if [ -f "$dir/.installed" ] && [ "$(cat "$dir/.installed")" = "$want" ]; then
    echo "install-cuda-tools: $name up to date ($want)"
    return
  fi
  echo "install-cuda-tools: installing $name ($want)"
  rm -rf "$dir"
  "$PYTHON" -m pip install --quiet --disable-pip-version-check --no-deps --no-compile \
    --only-binary=:all: --root-user-action=ignore --target "$dir" "$@"
  echo "$want" >"$dir/.installed"
}

install_set cuda-12.2 "${CUDA_12_2[@]}"
install_set cuda-12.4 "${CUDA_12_4[@]}"
install_set disasm "${DISASM[@]}"

nvrtc_12_2="$DEST/cuda-12.2/nvidia/cuda_nvrtc/lib/libnvrtc.so.12"
ptxas_12_2="$DEST/cuda-12.2/nvidia/cuda_nvcc/bin/ptxas"
nvrtc_12_4="$DEST/cuda-12.4/nvidia/cuda_nvrtc/lib/libnvrtc.so.12"
ptxas_12_4="$DEST/cuda-12.4/nvidia/cuda_nvcc/bin/ptxas"
nvdisasm="$DEST/disasm/nvidia/cu13/bin/nvdisasm"
for f in "$nvrtc_12_2" "$ptxas_12_2" "$nvrtc_12_4" "$ptxas_12_4" "$nvdisasm"; do
  [ -e "$f" ] || { echo "install-cuda-tools: expected $f after the install" >&2; exit 1; }
done
chmod +x "$ptxas_12_2" "$ptxas_12_4" "$nvdisasm"

cat >"$DEST/env.sh.tmp" <<EOF
# Written by scripts/install-cuda-tools.sh; the kernels crate's tests read this file.
export GPUCOST_NVRTC_12_2="$nvrtc_12_2"
export GPUCOST_PTXAS_12_2="$ptxas_12_2"
export GPUCOST_NVRTC_12_4="$nvrtc_12_4"
export GPUCOST_PTXAS_12_4="$ptxas_12_4"
export GPUCOST_NVDISASM="$nvdisasm"
EOF
mv "$DEST/env.sh.tmp" "$DEST/env.sh"
echo "install-cuda-tools: done; variables in $DEST/env.sh:"
cat "$DEST/env.sh"
