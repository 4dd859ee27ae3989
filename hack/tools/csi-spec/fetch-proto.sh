#!/usr/bin/env bash
# Puts the CSI spec's csi.proto (v1.12.0, from the Go module proxy) in the tools cache and
# prints its path. The proto is upstream code, so it is fetched, never committed.
set -euo pipefail

version=v1.12.0
dest_dir="${TRELLIS_TOOLS_DIR:-$HOME/.cache/trellis/bin}/csi-spec-${version}"
dest="${dest_dir}/csi.proto"

if [[ -s "${dest}" ]]; then
  echo "${dest}"
  exit 0
fi

# `go mod download` outside a module needs no go.mod; -json reports the extracted Dir.
work="$(mktemp -d)"
trap 'rm -rf "${work}"' EXIT
mod_dir="$(cd "${work}" && GOFLAGS=-mod=mod go mod download -json \
  "github.com/container-storage-interface/spec@${version}" \
  | sed -n 's/^[[:space:]]*"Dir":[[:space:]]*"\(.*\)",\{0,1\}$/\1/p')"
if [[ -z "${mod_dir}" || ! -s "${mod_dir}/csi.proto" ]]; then
  echo "fetch-proto: csi.proto not found in module download (dir: '${mod_dir}')" >&2
  exit 1
fi

mkdir -p "${dest_dir}"
tmp="$(mktemp "${dest_dir}/.csi.proto.XXXXXX")"
cp "${mod_dir}/csi.proto" "${tmp}"
chmod 0644 "${tmp}"
mv -f "${tmp}" "${dest}"
echo "${dest}"
