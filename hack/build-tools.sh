#!/usr/bin/env bash
# Builds the pinned control-plane and test binaries from the wrapper Go modules in
# hack/tools/ and prints the path of each one, one per line, on stdout.
#
# Guarantees:
# - Binaries come only from the exact versions in the committed go.mod/go.sum
#   (-mod=readonly: a build never changes what is pinned).
# - Each lands in ${TRELLIS_TOOLS_DIR:-$HOME/.cache/trellis/bin}/<name>-<version>/<name>;
#   one already there is reused, so a warm cache answers in seconds.
# - One build at a time across all processes (flock): Go builds take both cores.
# - A build goes to a temporary directory that is renamed into place only when complete,
#   so a failed or interrupted build never leaves a half-written binary in the cache.
#
# Usage: hack/build-tools.sh <name>...   names: kube-apiserver kube-controller-manager
#                                          kubectl etcd csi-sanity helm
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
tools_dir="${TRELLIS_TOOLS_DIR:-$HOME/.cache/trellis/bin}"

# Prints "<wrapper module dir> <pinned module> <package to build>" for a tool name.
recipe() {
  case "$1" in
    kube-apiserver | kube-controller-manager | kubectl)
      echo "kubernetes k8s.io/kubernetes k8s.io/kubernetes/cmd/$1" ;;
    etcd) echo "etcd go.etcd.io/etcd/server/v3 go.etcd.io/etcd/server/v3" ;;
    csi-sanity)
      echo "csi-sanity github.com/kubernetes-csi/csi-test/v5 github.com/kubernetes-csi/csi-test/v5/cmd/csi-sanity" ;;
    helm) echo "helm helm.sh/helm/v4 helm.sh/helm/v4/cmd/helm" ;;
    *) return 1 ;;
  esac
}

# The pinned version is read from the committed go.mod, so the cache key cannot drift
# from what is built.
pinned_version() {
  awk -v m="$2" '$1 == m && $2 ~ /^v/ { print $2; exit } $1 == "require" && $2 == m { print $3; exit }' \
    "${here}/tools/$1/go.mod"
}

note() { printf 'build-tools: %s\n' "$*" >&2; }

# Kubernetes binaries and helm report their version from ldflags (as upstream's release
# builds do); without them kubectl calls itself v0.0.0-master and helm v4.3.
ldflags_for() {
  local module="$1" version="$2" flags="-s -w"
  if [[ "${module}" == "k8s.io/kubernetes" ]]; then
    local major minor rest
    rest="${version#v}"; major="${rest%%.*}"; rest="${rest#*.}"; minor="${rest%%.*}"
    local pkg
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
      flags+=" -X ${pkg}.gitVersion=${version} -X ${pkg}.gitMajor=${major}"
      flags+=" -X ${pkg}.gitMinor=${minor} -X ${pkg}.gitTreeState=clean"
      flags+=" -X ${pkg}.buildDate=1970-01-01T00:00:00Z"
    done
  elif [[ "${module}" == "helm.sh/helm/v4" ]]; then
    flags+=" -X helm.sh/helm/v4/internal/version.version=${version} -X helm.sh/helm/v4/internal/version.gitTreeState=clean"
  fi
  printf '%s' "${flags}"
}

tmp_dir=""
build_pid=""
ticker_pid=""
cleanup() {
  [[ -n "${ticker_pid}" ]] && kill "${ticker_pid}" 2>/dev/null || true
  [[ -n "${build_pid}" ]] && kill "${build_pid}" 2>/dev/null && wait "${build_pid}" 2>/dev/null || true
  [[ -n "${tmp_dir}" ]] && rm -rf "${tmp_dir}"
  return 0
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

build_one() {
  local name="$1" module_dir module package version dest started
  read -r module_dir module package < <(recipe "${name}") || {
    note "unknown tool '${name}' (known: kube-apiserver kube-controller-manager kubectl etcd csi-sanity helm)"
    return 2
  }
  version="$(pinned_version "${module_dir}" "${module}")"
  if [[ -z "${version}" ]]; then
    note "no pinned version of ${module} in hack/tools/${module_dir}/go.mod"
    return 1
  fi
  dest="${tools_dir}/${name}-${version}"
  if [[ -x "${dest}/${name}" ]]; then
    echo "${dest}/${name}"
    return 0
  fi

  mkdir -p "${tools_dir}"
  exec 9>"${tools_dir}/.build.lock"
  if ! flock -n 9; then
    note "waiting for another build to finish (lock ${tools_dir}/.build.lock)"
    flock 9
  fi
  # Another process may have built it while this one waited for the lock.
  if [[ -x "${dest}/${name}" ]]; then
    exec 9>&-
    echo "${dest}/${name}"
    return 0
  fi

  case "${module_dir}" in
    # Measured cold on 2 cores: apiserver 3.6 min, controller-manager +1.6, kubectl +0.4;
    # up to 12 min in all on a slower machine.
    kubernetes) note "building ${name} ${version}: a cold build of the three Kubernetes binaries takes 6-12 min on 2 cores (kube-apiserver is the longest); cached afterwards" ;;
    *) note "building ${name} ${version} (under a minute cold, helm ~4 min; cached afterwards)" ;;
  esac
  started=${SECONDS}
  # Holding the lock, no build is running: leftovers are from a killed build.
  rm -rf "${tools_dir}/.building-${name}."*
  tmp_dir="$(mktemp -d "${tools_dir}/.building-${name}.XXXXXX")"
  (
    cd "${here}/tools/${module_dir}"
    GOFLAGS=-mod=readonly CGO_ENABLED=0 exec go build -trimpath \
      -ldflags="$(ldflags_for "${module}" "${version}")" -o "${tmp_dir}/${name}" "${package}"
  ) &
  build_pid=$!
  (
    # sleep runs as a child waited on, so a TERM ends it at once and stderr closes with us.
    trap 'kill "${sleep_pid}" 2>/dev/null; exit 0' TERM
    exec 9>&- # never hold the build lock
    # $$ is this script: if it is SIGKILLed, the ticker stops on its own.
    while kill -0 $$ 2>/dev/null; do
      sleep 30 & sleep_pid=$!
      wait "${sleep_pid}"
      note "  still building ${name}: $((SECONDS - started)) s elapsed"
    done
  ) &
  ticker_pid=$!
  local status=0
  wait "${build_pid}" || status=$?
  build_pid=""
  kill "${ticker_pid}" 2>/dev/null || true
  wait "${ticker_pid}" 2>/dev/null || true
  ticker_pid=""
  if [[ ${status} -ne 0 ]]; then
    note "building ${name} ${version} failed (exit ${status}) after $((SECONDS - started)) s"
    rm -rf "${tmp_dir}"; tmp_dir=""
    exec 9>&-
    return "${status}"
  fi
  # Renaming a whole directory is atomic; the destination only ever holds a complete binary.
  mv -T "${tmp_dir}" "${dest}"
  tmp_dir=""
  exec 9>&-
  note "built ${name} ${version} in $((SECONDS - started)) s -> ${dest}/${name}"
  echo "${dest}/${name}"
}

if [[ $# -eq 0 ]]; then
  note "usage: hack/build-tools.sh <name>...  (kube-apiserver kube-controller-manager kubectl etcd csi-sanity helm)"
  exit 2
fi
for tool in "$@"; do
  build_one "${tool}"
done
