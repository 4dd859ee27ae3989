//go:build tools

// Package tools pins helm so `go mod tidy` keeps it; hack/build-tools.sh builds
// cmd/helm from this module's exact versions, only when asked for.
package tools

import _ "helm.sh/helm/v4/cmd/helm"
