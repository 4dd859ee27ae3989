//go:build tools

// Package tools pins etcd's server module so `go mod tidy` keeps it; hack/build-tools.sh
// builds go.etcd.io/etcd/server/v3 (a main package) from this module's exact versions.
package tools

import _ "go.etcd.io/etcd/server/v3"
