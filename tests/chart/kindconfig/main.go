// Command kindconfig checks a kind cluster config file against kind's own
// types (sigs.k8s.io/kind/pkg/apis/config/v1alpha4), strictly: an unknown or
// misspelt field, a wrong kind or apiVersion, or a node role kind does not
// know fails.
//
//	go run . ../../../k8s/kind-config.yaml
package main

import (
	"fmt"
	"os"

	"sigs.k8s.io/kind/pkg/apis/config/v1alpha4"
	"sigs.k8s.io/yaml"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: kindconfig FILE")
		os.Exit(2)
	}
	if err := check(os.Args[1]); err != nil {
		fmt.Fprintf(os.Stderr, "kindconfig: %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

func check(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var cluster v1alpha4.Cluster
	if err := yaml.UnmarshalStrict(data, &cluster); err != nil {
		return err
	}
	if cluster.Kind != "Cluster" || cluster.APIVersion != "kind.x-k8s.io/v1alpha4" {
		return fmt.Errorf("kind %q, apiVersion %q: want Cluster, kind.x-k8s.io/v1alpha4", cluster.Kind, cluster.APIVersion)
	}
	controlPlanes := 0
	for i, node := range cluster.Nodes {
		switch node.Role {
		case v1alpha4.ControlPlaneRole:
			controlPlanes++
		case v1alpha4.WorkerRole:
		default:
			return fmt.Errorf("node %d: unknown role %q", i, node.Role)
		}
	}
	if len(cluster.Nodes) > 0 && controlPlanes == 0 {
		return fmt.Errorf("no control-plane node")
	}
	fmt.Printf("%s: a kind Cluster %q, %d control-plane and %d worker nodes\n",
		path, cluster.Name, controlPlanes, len(cluster.Nodes)-controlPlanes)
	return nil
}
