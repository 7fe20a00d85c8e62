module github.com/cluster-client-go/cluster

go 1.26.0
