//go:build tools

// Package cluster pins the Kubernetes components the cluster tests build: `go.mod` requires
// k8s.io/kubernetes and replaces each of its staging modules with the published version of the
// same release, so `go build` of these main packages needs no Kubernetes source in the project.
package cluster

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
