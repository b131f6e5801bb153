// Command etcd is etcd's own server entry point (etcdmain.Main), built from
// the published go.etcd.io/etcd/server/v3 module; the etcd repository's root
// module carries local replaces and cannot be built from the module proxy.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
