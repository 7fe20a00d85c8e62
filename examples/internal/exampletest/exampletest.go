// Package exampletest builds the examples' programs for their tests: from this module's
// source, to run them, and from a copy in a module of its own, as a user who copies one
// builds it.
package exampletest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Go returns the path of the go command, or skips the test if there is none.
func Go(t testing.TB) string {
	t.Helper()
	path, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("the go command is not found (%v): cannot build the example's programs", err)
	}
	return path
}

// Build builds the main package pkg of this module (a path relative to the test's
// directory, such as "./worker") into the file out, with the race detector when the
// test runs with it.
func Build(t testing.TB, pkg, out string) {
	t.Helper()
	args := []string{"build", "-o", out}
	if raceEnabled {
		args = append(args, "-race")
	}
	run(t, "", nil, Go(t), append(args, pkg)...)
}

// BuildCopy copies the Go files of the directory src, its tests left out, into a new
// module in a scratch directory outside this one, as a user copies an example into a
// module of their own, and builds it there. The new module requires this module,
// replaced by this checkout, and no other; go mod tidy adds what the copy needs. The
// test fails if the copy does not build (it imports an internal package of this module,
// or a file of this module it did not copy). BuildCopy returns the copy's directory,
// which holds the built program as "prog".
func BuildCopy(t testing.TB, src string) string {
	t.Helper()
	goCmd := Go(t)
	root, goVersion, _ := strings.Cut(run(t, "", nil, goCmd, "list", "-m", "-f", "{{.Dir}} {{.GoVersion}}"), " ")
	dir := t.TempDir() // outside this module: under $TMPDIR
	files, err := filepath.Glob(filepath.Join(src, "*.go"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no Go files in %s (%v)", src, err)
	}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		write(t, filepath.Join(dir, filepath.Base(f)), b)
	}
	const cluster = "github.com/cluster-client-go/cluster"
	write(t, filepath.Join(dir, "go.mod"), []byte("module example.com/copied\n\ngo "+goVersion+"\n\n"+
		"require "+cluster+" v0.0.0-00010101000000-000000000000\n\n"+
		"replace "+cluster+" => "+root+"\n"))
	// The checksums of this module's dependencies, so that go mod tidy need not look them up.
	sums, err := os.ReadFile(filepath.Join(root, "go.sum"))
	if err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(dir, "go.sum"), sums)
	env := []string{"GOFLAGS=-mod=mod", "GOWORK=off", "GOTOOLCHAIN=local"}
	run(t, dir, env, goCmd, "mod", "tidy")
	run(t, dir, env, goCmd, "build", "-o", "prog", ".")
	return dir
}

func write(t testing.TB, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// run runs a command in dir (the test's directory if "") and returns its output,
// trimmed; it fails the test if the command fails.
func run(t testing.TB, dir string, env []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s (in %s): %v\n%s", filepath.Base(name), strings.Join(args, " "), cmd.Dir, err, out)
	}
	return strings.TrimSpace(string(out))
}
