module github.com/cluster-client-go/cluster

go 1.26.0

require (
	github.com/gofrs/flock v0.13.2
	github.com/stretchr/testify v1.12.1
	go.uber.org/goleak v1.3.0
	golang.org/x/sys v0.50.0
)

require go.yaml.in/yaml/v3 v3.0.5 // indirect
