#!/usr/bin/env bash
# Installs what building and testing rlinkd needs on a Debian machine and is missing:
# cmake, clang and libclang-dev (boring-sys builds BoringSSL), python3-venv (the Crossbar
# end-to-end test), iproute2, haproxy and stunnel4 (the TLS sidecar pairs `rlinkd bench` compares
# rlinkd with). Idempotent: installs nothing when all is present.
set -euo pipefail

need=()
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v clang >/dev/null 2>&1 || need+=(clang)
compgen -G '/usr/lib/llvm-*/lib/libclang*.so*' >/dev/null || need+=(libclang-dev)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
python3 -m venv --help >/dev/null 2>&1 || need+=(python3-venv)
command -v haproxy >/dev/null 2>&1 || need+=(haproxy)
command -v stunnel4 >/dev/null 2>&1 || command -v stunnel >/dev/null 2>&1 || need+=(stunnel4)

if ((${#need[@]})); then
    echo "deps: installing ${need[*]}"
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
    echo "deps: no Rust toolchain (cargo) found; install one with rustup, then run this again" >&2
    exit 1
fi
echo "deps: ok (cmake, clang, libclang, python3 venv, haproxy, stunnel, cargo $(cargo --version | cut -d' ' -f2))"
