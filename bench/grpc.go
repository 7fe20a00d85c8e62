package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// gRPC unary over a Unix socket: the peer most Go programs would reach for. Bytes go
// through a pass-through codec, so protobuf costs nothing and the comparison is of
// the transports.

type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return *v.(*[]byte), nil }

func (rawCodec) Unmarshal(data []byte, v any) error {
	p := v.(*[]byte)
	*p = append((*p)[:0], data...)
	return nil
}

func (rawCodec) Name() string { return "raw" }

const grpcMethod = "/bench.Echo/Echo"

var echoDesc = grpc.ServiceDesc{
	ServiceName: "bench.Echo",
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Echo",
		Handler: func(_ any, _ context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			var b []byte
			if err := dec(&b); err != nil {
				return nil, err
			}
			return &b, nil
		},
	}},
}

func grpcServerMain(args []string) {
	fs := flag.NewFlagSet("grpc-server", flag.ExitOnError)
	path := fs.String("path", "", "Unix socket path")
	_ = fs.Parse(args)
	ln, err := net.Listen("unix", *path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "grpc-server:", err)
		os.Exit(1)
	}
	s := grpc.NewServer(grpc.ForceServerCodec(rawCodec{}))
	s.RegisterService(&echoDesc, struct{}{})
	go func() { _ = s.Serve(ln) }()
	serveAgent(func(req request) response { return response{Err: "unknown op " + req.Op} })
	s.Stop()
}

func grpcClientMain(args []string) {
	fs := flag.NewFlagSet("grpc-client", flag.ExitOnError)
	path := fs.String("path", "", "Unix socket path")
	_ = fs.Parse(args)
	cc, err := grpc.NewClient("unix://"+*path,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{})))
	if err != nil {
		fmt.Fprintln(os.Stderr, "grpc-client:", err)
		os.Exit(1)
	}
	defer cc.Close()
	ctx := context.Background()
	call := func(req []byte) error {
		var resp []byte
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second) // as a cluster call has CallTimeout
		defer cancel()
		return cc.Invoke(cctx, grpcMethod, &req, &resp)
	}
	if err := call(make([]byte, 8)); err != nil { // connect before the first measurement
		fmt.Fprintln(os.Stderr, "grpc-client:", err)
		os.Exit(1)
	}
	serveAgent(func(req request) response {
		switch req.Op {
		case "seq":
			msg := make([]byte, req.Size)
			return sequential(req, func() error { return call(msg) })
		case "tput":
			return concurrent(req, func() func() error {
				msg := make([]byte, req.Size)
				return func() error { return call(msg) }
			})
		}
		return response{Err: "unknown op " + req.Op}
	})
}
