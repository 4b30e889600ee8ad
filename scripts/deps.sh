# Sourced by scripts/test and scripts/demo: installs the Debian 12 packages the build and tests need.
DLAGENT_PACKAGES=(
  cmake ninja-build g++ pkg-config ccache
  protobuf-compiler libprotobuf-dev libgrpc++-dev protobuf-compiler-grpc
  libcurl4-openssl-dev libssl-dev libopenblas-dev libsystemd-dev
  libspdlog-dev libtomlplusplus-dev libcli11-dev nlohmann-json3-dev libcpp-httplib-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  systemd util-linux iproute2
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

dlagent_build() {
  cmake --preset default >/dev/null
  cmake --build --preset default
}
