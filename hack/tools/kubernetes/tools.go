//go:build tools

// Package tools pins k8s.io/kubernetes v1.37.1 so `go mod tidy` keeps every module the
// control-plane binaries need; hack/build-tools.sh builds them from these exact versions.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
