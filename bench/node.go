package main

import (
	"context"
	_ "embed"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

//go:embed member.js
var memberJS []byte

// nodePeer is the Node.js cluster-client package, installed by npm into a scratch
// directory for this run.
type nodePeer struct {
	dir     string
	version string
}

// installNode installs cluster-client (with sdk-base, the base class of its clients) into a fresh
// directory, or says why it cannot.
func installNode(log func(string, ...any)) (*nodePeer, error) {
	for _, tool := range []string{"node", "npm"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("%s is not installed", tool)
		}
	}
	dir, err := os.MkdirTemp("", "ccbench-node-")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "package.json"), []byte(`{"name":"ccbench-node","private":true}`+"\n"), 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "member.js"), memberJS, 0o644); err != nil {
		return nil, err
	}
	log("installing the Node.js cluster-client package into %s", dir)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "npm", "install", "--no-audit", "--no-fund", "--loglevel=error", "cluster-client")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("npm install cluster-client: %w: %s", err, strings.TrimSpace(string(out)))
	}
	n := &nodePeer{dir: dir}
	cmd = exec.Command("node", "-p", "require('./node_modules/cluster-client/package.json').version + ' (node ' + process.version + ')'")
	cmd.Dir = dir
	if out, err := cmd.Output(); err == nil {
		n.version = strings.TrimSpace(string(out))
	}
	return n, nil
}

// command is the command line of one member on port.
func (n *nodePeer) command(port int) *exec.Cmd {
	cmd := exec.Command("node", "member.js")
	cmd.Dir = n.dir
	cmd.Env = append(os.Environ(), fmt.Sprintf("BENCH_PORT=%d", port))
	return cmd
}

func (n *nodePeer) remove() { os.RemoveAll(n.dir) }
