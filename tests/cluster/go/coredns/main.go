// A minimal CoreDNS build for the test cluster: only the plugins the cluster's
// Corefile uses, which keeps the build small (the default CoreDNS build pulls in
// every cloud provider SDK). Nothing here can forward queries off the machine:
// the forward plugin is not compiled in.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/loop"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"
	_ "github.com/coredns/coredns/plugin/template"
)

// Plugin execution order (a subset of CoreDNS's plugin.cfg, same relative order).
var directives = []string{
	"reload",
	"bind",
	"errors",
	"log",
	"health",
	"ready",
	"loadbalance",
	"cache",
	"template",
	"loop",
	"kubernetes",
}

func init() {
	dnsserver.Directives = directives
}

func main() {
	coremain.Run()
}
