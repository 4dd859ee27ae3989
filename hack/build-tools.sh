#!/usr/bin/env bash
# Builds the pinned control-plane and test binaries from the wrapper Go modules in
# hack/tools/ and prints the path of each one, one per line, on stdout.
#
# Guarantees:
# - Binaries come only from the exact versions in the committed go.mod/go.sum
#   (-mod=readonly: a build never changes what is pinned).
# - Each lands in ${TRELLIS_TOOLS_DIR:-$HOME/.cache/trellis/bin}/<name>-<version>-<key>/<name>,
#   <key> being 8 hex digits of a hash of the wrapper's go.mod and go.sum and the build
#   flags: one already there is reused, so a warm cache answers in seconds, and a change
#   to a pin, a replace line or the ldflags builds anew instead of reusing a stale binary.
# - One build at a time across all processes (flock): Go builds take both cores.
# - A build goes to a temporary directory that is renamed into place only when complete,
#   so a failed or interrupted build never leaves a half-written binary in the cache.
# - Where setpriv exists, every child (go build, the test delay) gets SIGKILL from the kernel when
#   this script dies, even by SIGKILL: nothing keeps building or holds its stderr open.
#
# TRELLIS_BUILD_TEST_DELAY_S (tests only) waits that long after go build and before the
# rename, so a test's signal always lands mid-build however warm the Go cache is.
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

# What the build depends on besides Go itself: the pins and the flags. The Kubernetes
# binaries share one wrapper, so the package is part of the key too.
cache_key() {
  local module_dir="$1" package="$2" ldflags="$3"
  {
    cat "${here}/tools/${module_dir}/go.mod" "${here}/tools/${module_dir}/go.sum"
    printf 'package=%s\nflags=-trimpath CGO_ENABLED=0 GOFLAGS=-mod=readonly\nldflags=%s\n' "${package}" "${ldflags}"
  } | sha256sum | cut -c1-8
}

# A command prefix that has the kernel SIGKILL the command when this script dies.
pdeath=()
if setpriv --pdeathsig KILL -- true 2>/dev/null; then pdeath=(setpriv --pdeathsig KILL --); fi

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
ticker_fd=""
cleanup() {
  trap '' INT TERM
  # Whoever read stderr may be dead (a SIGKILLed harness): a job report or error written
  # there must not end the cleanup by SIGPIPE before the partial build is removed.
  exec 2>/dev/null
  [[ -n "${ticker_fd}" ]] && exec {ticker_fd}>&- || true
  [[ -n "${build_pid}" ]] && kill "${build_pid}" 2>/dev/null && wait "${build_pid}" 2>/dev/null || true
  [[ -n "${tmp_dir}" ]] && rm -rf "${tmp_dir}"
  return 0
}
trap cleanup EXIT
trap '' PIPE
# The first signal starts the cleanup; later ones must not cut it short. They do come: when
# the harness's Node process dies, a second parent-death SIGTERM was seen (traced) arriving
# mid-cleanup (the signal follows the parent thread, and Node has several), and an `exit`
# run by a trap inside the EXIT trap ends the shell on the spot.
trap 'trap "" INT TERM; exit 130' INT
trap 'trap "" INT TERM; exit 143' TERM

build_one() {
  local name="$1" module_dir module package version ldflags dest started
  read -r module_dir module package < <(recipe "${name}") || {
    note "unknown tool '${name}' (known: kube-apiserver kube-controller-manager kubectl etcd csi-sanity helm)"
    return 2
  }
  version="$(pinned_version "${module_dir}" "${module}")"
  if [[ -z "${version}" ]]; then
    note "no pinned version of ${module} in hack/tools/${module_dir}/go.mod"
    return 1
  fi
  ldflags="$(ldflags_for "${module}" "${version}")"
  dest="${tools_dir}/${name}-${version}-$(cache_key "${module_dir}" "${package}" "${ldflags}")"
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
    GOFLAGS=-mod=readonly CGO_ENABLED=0 exec "${pdeath[@]}" go build -trimpath \
      -ldflags="${ldflags}" -o "${tmp_dir}/${name}" "${package}"
  ) &
  build_pid=$!
  # The ticker reads a pipe only this script writes to, and nothing is ever written: it
  # ticks on each read timeout and ends at EOF, which comes the moment the script closes
  # the pipe or dies, even by SIGKILL. (A ticker that polled for the script would hold
  # stderr open after a SIGKILL for up to a tick.)
  exec {ticker_fd}> >(
    exec 9>&-
    while :; do
      read -rt 30 && continue
      (($? > 128)) || exit 0
      note "  still building ${name}: $((SECONDS - started)) s elapsed"
    done
  )
  local status=0
  wait "${build_pid}" || status=$?
  build_pid=""
  exec {ticker_fd}>&-
  ticker_fd=""
  if [[ ${status} -eq 0 && -n "${TRELLIS_BUILD_TEST_DELAY_S:-}" ]]; then
    # The sleep itself says it has begun, so the note comes only once pdeathsig is set:
    # a script killed right after the note cannot leave the sleep behind.
    "${pdeath[@]}" bash -c 'printf "build-tools: test delay: %s s before the rename\n" "$1" >&2; exec sleep "$1" 2>/dev/null' \
      test-delay "${TRELLIS_BUILD_TEST_DELAY_S}" </dev/null >/dev/null 9>&- &
    build_pid=$!
    wait "${build_pid}" || status=$?
    build_pid=""
  fi
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
