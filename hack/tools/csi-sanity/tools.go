//go:build tools

// Package tools pins csi-test so `go mod tidy` keeps it; hack/build-tools.sh builds
// cmd/csi-sanity from this module's exact versions.
package tools

import _ "github.com/kubernetes-csi/csi-test/v5/cmd/csi-sanity"
