#!/usr/bin/env bash
# Builds the release binaries a GPU box runs (it has no Rust toolchain) and puts them in
# gpu-bin/ (git-ignored through .git/info/exclude), for scripts/gpu_verify.sh:
#   gpu-bin/launcher, gpu-bin/worker   the product
#   gpu-bin/selftest                   the kernels' standalone self-test (kernels/examples)
# Debug info is stripped so the folder stays small enough to carry to the device machine.
#
# Usage: scripts/prepare_gpu_bin.sh          (from anywhere; builds with cargo --release)
# A binary that fails to build is reported and skipped; the exit status is non-zero if any
# of the three is missing at the end.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
out="$root/gpu-bin"
mkdir -p "$out"
say() { echo "prepare_gpu_bin: $*" >&2; }

# Keep the binaries out of commits: a fresh checkout has no .git/info/exclude entry for them.
exclude="$(git rev-parse --git-path info/exclude 2>/dev/null || true)"
if [[ -n $exclude ]] && ! grep -qx '/gpu-bin/' "$exclude" 2>/dev/null; then
    mkdir -p "$(dirname "$exclude")"
    echo '/gpu-bin/' >>"$exclude"
    say "added /gpu-bin/ to $exclude"
fi

failed=0
build() {
    local what="$1"
    shift
    say "cargo build --release $* ($what)"
    if ! cargo build --release "$@"; then
        say "FAILED to build $what"
        failed=1
        return 1
    fi
}

copy() {
    local src="$1" name="$2"
    if [[ ! -x $src ]]; then
        say "missing $src"
        failed=1
        return 1
    fi
    cp "$src" "$out/$name.tmp"
    if command -v strip >/dev/null 2>&1; then
        strip --strip-debug "$out/$name.tmp" || say "strip failed for $name (kept as is)"
    fi
    mv "$out/$name.tmp" "$out/$name"
    say "gpu-bin/$name ($(du -h "$out/$name" | cut -f1))"
}

build "launcher and worker" -p moco-launcher -p moco-worker && {
    copy target/release/launcher launcher || true
    copy target/release/worker worker || true
}
build "kernel self-test" -p moco-kernels --example selftest && copy target/release/examples/selftest selftest || true

{
    echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with uncommitted changes)')"
    echo "rustc: $(rustc --version 2>/dev/null || echo unknown)"
    echo "host: $(uname -srm), $(ldd --version 2>/dev/null | head -n1 || echo 'glibc unknown')"
    # The newest glibc symbol the binaries use: the GPU box's glibc must be at least this.
    if command -v objdump >/dev/null 2>&1; then
        need="$(for f in "$out"/launcher "$out"/worker "$out"/selftest; do
            [[ -f $f ]] && objdump -T "$f" 2>/dev/null | grep -o 'GLIBC_[0-9.]*'
        done | sort -V -u | tail -n1 || true)"
        echo "needs: ${need:-unknown}"
    fi
} >"$out/BUILD_INFO"
say "wrote gpu-bin/BUILD_INFO; total $(du -sh "$out" | cut -f1)"
if [[ $failed != 0 ]]; then
    say "some binaries are missing (see above)"
    exit 1
fi
