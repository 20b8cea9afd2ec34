#!/usr/bin/env bash
# The cold-load benchmark (benches/cold.rs): installs fio if it is missing
# (Debian's package), then runs `cargo bench --bench cold`. Arguments and
# MM_BENCH_* variables go through to the bench (see benches/cold.rs).
# Run as root for the page cache to be dropped as a whole before each load
# (otherwise only the file's pages are evicted, with posix_fadvise).
set -euo pipefail
cd "$(dirname "$0")/.."
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
if ! command -v fio > /dev/null; then
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fio
fi
fio --version
exec cargo bench --bench cold -- "$@"
