# Sourced by scripts/test and scripts/demo: installs the Debian 12 packages the build and tests need.
DLAGENT_PACKAGES=(
  cmake ninja-build g++ clang-14 clang-format clang-tidy pkg-config ccache
  protobuf-compiler libprotobuf-dev libgrpc++-dev protobuf-compiler-grpc
  libcurl4-openssl-dev libssl-dev libopenblas-dev libsystemd-dev
  libspdlog-dev libtomlplusplus-dev libcli11-dev nlohmann-json3-dev libcpp-httplib-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  python3-numpy
  systemd util-linux iproute2 curl nftables
  python3-torch python3-matplotlib openmpi-bin python3-mpi4py python3-distributed
  mmdebstrap systemd-container cloud-init python3-yaml packer prometheus chromium
)

dlagent_install_deps() {
  local missing=()
  for p in "${DLAGENT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "installing: ${missing[*]}"
  local sudo=()
  [ "$(id -u)" = 0 ] || sudo=(sudo)
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# The SQS emulator (fauxqs, pinned in tests/emulators/sqs/package-lock.json) needs Node.js 20 or newer; the
# deployment checks use cfn-lint and AWS's resource specification (pinned in tests/deploy/package-lock.json).
dlagent_install_emulators() {
  local sudo=()
  [ "$(id -u)" = 0 ] || sudo=(sudo)
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    echo "installing: nodejs npm"
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
  fi
  local major
  major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
  if [ "$major" -lt 20 ]; then
    echo "warning: Node.js $(node --version 2>/dev/null) is older than 20: the SQS emulator tests will fail" >&2
  fi
  local dir
  for dir in tests/emulators/sqs tests/deploy; do
    if [ ! -d "$dir/node_modules" ] || [ "$dir/package-lock.json" -nt "$dir/node_modules/.package-lock.json" ]; then
      echo "installing $dir's npm packages (npm ci)"
      npm ci --prefix "$dir" --no-audit --no-fund --loglevel=error >/dev/null
    fi
  done
}

dlagent_build() {
  cmake --preset default >/dev/null
  cmake --build --preset default
}
