package frame_test

import (
	"bytes"
	"fmt"
	"io"

	"github.com/cluster-client-go/cluster/frame"
)

func ExampleRead() {
	var conn bytes.Buffer // stands in for a Unix socket

	// The follower sends an invoke; the leader reads it and answers.
	_ = frame.Write(&conn, frame.Header{Kind: frame.KindInvoke, ID: 7, Timeout: 1500}, []byte("math.Add"), []byte("[1,2]"))
	fmt.Printf("header: % x\n", conn.Bytes()[:frame.HeaderSize])

	f, err := frame.Read(&conn, frame.Limits{})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("%s id=%d timeout=%dms method=%s body=%s\n", f.Kind, f.ID, f.Timeout, f.Meta, f.Body)

	_, err = frame.Read(&conn, frame.Limits{})
	fmt.Println(err == io.EOF)
	// Output:
	// header: 01 03 00 00 00 00 00 00 00 00 00 07 00 00 05 dc 00 00 00 08 00 00 00 05
	// invoke id=7 timeout=1500ms method=math.Add body=[1,2]
	// true
}

func ExampleParseHeader() {
	// A header claiming a 4 GiB body is rejected before anything is allocated for it.
	h := frame.Header{Version: frame.Version, Kind: frame.KindPublish, MetaLen: 6, BodyLen: 1<<32 - 1}
	_, err := frame.ParseHeader(h.Append(nil), frame.Limits{})
	fmt.Println(err)
	// Output:
	// frame: publish frame body is 4294967295 bytes, the limit is 16777216: frame too large
}
