#!/usr/bin/env bash
# Install the system packages dfs needs to build and test on Debian 12 (run as root, or with sudo).
#   fuse3 libfuse3-dev : FUSE mounts (fusermount3)
#   pkg-config libclang-dev : bindgen for the RocksDB bindings
#   librocksdb-dev : Debian's RocksDB 7.8, linked instead of compiling the bundled C++ (docs/build.md)
#   time : peak-memory figures in benches/put_get.sh
#   rsync sqlite3 git : real tools run inside the mount by tests/posix/tools.sh
#   bindfs fio : baselines and workloads of benches/mount.sh
#   prometheus : a real Prometheus server scrapes the peers in tests/tests/metrics.rs
#   g++ : libFuzzer's C++ sources, built by libfuzzer-sys for the fuzz targets (fuzz/smoke.sh)
#   nftables : a test sends a bulk link through a byte-flipping proxy (tests/tests/hostile.rs)
#   python3 : the import-cycle check of tests/run.sh (tests/arch/import_cycles.py)
#   curl : the browser of the OIDC login tests (follows the provider's redirects; tests/tests/oidc.rs)
set -euo pipefail
packages=(fuse3 libfuse3-dev pkg-config libclang-dev librocksdb-dev time rsync sqlite3 git bindfs fio prometheus g++ nftables python3 curl)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all packages present"
  exit 0
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q
$sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
