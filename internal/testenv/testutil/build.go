// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package testutil

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
)

// EnvBin names a directory of commands already built from this checkout
// (`make test` sets it to ./bin after `make build`): [Commands] uses
// them instead of building its own.
const EnvBin = "CLEARANCE_BIN"

// commands is the process's one directory of built commands.
var commands struct {
	sync.Mutex
	dir   string
	owned bool // dir is ours to remove
	built map[string]error
}

// Commands returns a directory holding the named commands of cmd/, for
// tests that run the real binaries. With [EnvBin] set, its directory is
// used as it is (every name must be there); otherwise each command is
// built once per test process (CGO_ENABLED=0 and -trimpath, as `make
// build` does) into a directory that other uids can read and run. Call
// [RemoveCommands] from TestMain when the tests are done.
func Commands(names ...string) (string, error) {
	commands.Lock()
	defer commands.Unlock()
	if dir := os.Getenv(EnvBin); dir != "" {
		var missing []string
		for _, n := range names {
			if _, err := os.Stat(filepath.Join(dir, n)); err != nil {
				missing = append(missing, n)
			}
		}
		if len(missing) > 0 {
			return "", fmt.Errorf("%s=%s lacks %s (run make build)", EnvBin, dir, strings.Join(missing, ", "))
		}
		return dir, nil
	}
	if commands.dir == "" {
		dir, err := os.MkdirTemp("", "clearance-test-bin-")
		if err != nil {
			return "", err
		}
		if err := os.Chmod(dir, 0o755); err != nil {
			os.RemoveAll(dir)
			return "", err
		}
		commands.dir, commands.owned, commands.built = dir, true, map[string]error{}
	}
	root, err := ModuleRoot()
	if err != nil {
		return "", err
	}
	var errs []error
	for _, n := range names {
		err, done := commands.built[n]
		if !done {
			cmd := exec.Command("go", "build", "-trimpath", "-o", filepath.Join(commands.dir, n), "./cmd/"+n)
			cmd.Dir = root
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
			if out, e := cmd.CombinedOutput(); e != nil {
				err = fmt.Errorf("build %s: %v\n%s", n, e, out)
			}
			commands.built[n] = err
		}
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return "", err
	}
	return commands.dir, nil
}

// RemoveCommands removes the directory [Commands] built into, if it built
// one.
func RemoveCommands() {
	commands.Lock()
	defer commands.Unlock()
	if commands.owned {
		os.RemoveAll(commands.dir)
	}
	commands.dir, commands.owned, commands.built = "", false, nil
}

// CopyCommands copies the named commands from dir into dst (created
// 0755), each 0755: for tests whose binaries must be reachable by a
// throwaway user when the checkout is not.
func CopyCommands(dir, dst string, names ...string) error {
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	for _, n := range names {
		if err := copyFile(filepath.Join(dir, n), filepath.Join(dst, n)); err != nil {
			return err
		}
	}
	return nil
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// ModuleRoot returns the directory of this module's go.mod, searched
// upwards from the working directory (a test runs in its package's
// directory).
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}
