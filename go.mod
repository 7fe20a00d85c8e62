module github.com/cluster-client-go/cluster

go 1.26.0

require (
	github.com/gofrs/flock v0.13.2 // indirect
	github.com/stretchr/testify v1.12.1 // indirect
	go.uber.org/goleak v1.3.0 // indirect
	golang.org/x/sys v0.50.0 // indirect
)
