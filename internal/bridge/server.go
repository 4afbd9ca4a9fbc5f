// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package bridge

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/user"
	"slices"
	"strconv"
	"sync"
	"time"
)

// Hub is one hub the far side found.
type Hub struct {
	// ID names the hub (its directory name); it is what the near side
	// opens.
	ID string
	// Path is its socket.
	Path string
}

// ServerConfig configures [Serve]. Hubs is required.
type ServerConfig struct {
	// Hubs returns the hubs to offer, found anew on every call.
	Hubs func() ([]Hub, error)

	// Exec runs one command of the far side's clearancectl with args
	// (without the program name), writing to stdout and stderr, and
	// returns its exit status. Allowed lists the commands it may run
	// (args[0]); nil Exec refuses every X frame.
	Exec    func(ctx context.Context, args []string, stdout, stderr io.Writer) int
	Allowed []string

	// Rescan is how often the hubs are looked for again (default 1 s).
	Rescan time.Duration

	// Logger receives diagnostics (default: discarded). The far side's
	// standard error reaches the near side's terminal through ssh.
	Logger *slog.Logger
}

// Serve runs the far side of a bridge on in and out (the ssh session's
// stdin and stdout) until in ends, ctx ends or the near side breaks the
// protocol. It returns nil when in ends cleanly.
func Serve(ctx context.Context, in io.Reader, out io.Writer, cfg ServerConfig) error {
	if cfg.Hubs == nil {
		return errors.New("bridge: ServerConfig.Hubs is nil")
	}
	if cfg.Rescan <= 0 {
		cfg.Rescan = time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	fw := newFrameWriter(out)
	st := newStreams(fw)
	defer st.closeAll()

	hello := Hello{Version: Version, UID: os.Getuid()}
	hello.Host, _ = os.Hostname()
	if u, err := user.LookupId(strconv.Itoa(os.Getuid())); err == nil {
		hello.User = u.Username
	}
	var (
		mu    sync.Mutex
		known = map[string]string{} // id → socket path
	)
	announce := func(force bool) error {
		hubs, err := cfg.Hubs()
		if err != nil {
			log.Warn("find hubs", "err", err)
			return nil
		}
		next := map[string]string{}
		ids := []string{}
		for _, h := range hubs {
			if _, dup := next[h.ID]; dup || !ValidID(h.ID) {
				continue
			}
			next[h.ID] = h.Path
			ids = append(ids, h.ID)
		}
		slices.Sort(ids)
		mu.Lock()
		same := len(next) == len(known)
		for id, p := range next {
			if known[id] != p {
				same = false
			}
		}
		known = next
		mu.Unlock()
		if same && !force {
			return nil
		}
		h := hello
		h.Hubs = ids
		b, _ := json.Marshal(h)
		return fw.write(frameHubs, 0, b)
	}
	if err := announce(true); err != nil {
		return err
	}

	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(cfg.Rescan)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if err := announce(false); err != nil {
					cancel()
					return
				}
			}
		}
	}()

	frames := make(chan frame)
	readErr := make(chan error, 1)
	go func() {
		br := bufio.NewReaderSize(in, 2*MaxPayload)
		for {
			f, err := readFrame(br)
			if err != nil {
				readErr <- err
				return
			}
			select {
			case frames <- f:
			case <-ctx.Done():
				readErr <- ctx.Err()
				return
			}
		}
	}()
	execs := map[uint32]context.CancelFunc{}
	var execMu sync.Mutex
	defer func() {
		execMu.Lock()
		for _, c := range execs {
			c()
		}
		execMu.Unlock()
	}()
	for {
		var f frame
		select {
		case <-ctx.Done():
			return nil
		case err := <-readErr:
			if errors.Is(err, io.EOF) || errors.Is(err, context.Canceled) {
				return nil
			}
			return err
		case f = <-frames:
		}
		switch f.typ {
		case frameOpen:
			id := string(f.payload)
			mu.Lock()
			path, ok := known[id]
			mu.Unlock()
			if !ok {
				fw.write(frameClose, f.stream, []byte("no hub "+strconv.Quote(id)+" on this host"))
				continue
			}
			c, err := (&net.Dialer{Timeout: 10 * time.Second}).DialContext(ctx, "unix", path)
			if err != nil {
				fw.write(frameClose, f.stream, []byte("connect to hub "+id+": "+err.Error()))
				continue
			}
			st.attach(f.stream, c)
		case frameData:
			st.deliver(f.stream, f.payload)
		case frameClose:
			st.remoteClose(f.stream)
			execMu.Lock()
			if c := execs[f.stream]; c != nil {
				c()
			}
			execMu.Unlock()
		case frameExec:
			var args []string
			if err := json.Unmarshal(f.payload, &args); err != nil || len(args) == 0 {
				fw.write(frameStderr, f.stream, []byte("bridge: exec needs a JSON array of arguments\n"))
				fw.write(frameExit, f.stream, []byte("2"))
				continue
			}
			if cfg.Exec == nil || !slices.Contains(cfg.Allowed, args[0]) {
				fw.write(frameStderr, f.stream, []byte(fmt.Sprintf("bridge: command %q is not run through the bridge\n", args[0])))
				fw.write(frameExit, f.stream, []byte("2"))
				continue
			}
			ectx, ecancel := context.WithCancel(ctx)
			execMu.Lock()
			execs[f.stream] = ecancel
			execMu.Unlock()
			wg.Add(1)
			go func(id uint32) {
				defer wg.Done()
				defer ecancel()
				code := cfg.Exec(ectx, args, &frameSink{fw: fw, typ: frameData, id: id}, &frameSink{fw: fw, typ: frameStderr, id: id})
				fw.write(frameExit, id, []byte(strconv.Itoa(code)))
				execMu.Lock()
				delete(execs, id)
				execMu.Unlock()
			}(f.stream)
		default:
			return fmt.Errorf("%w: frame type %q from the near side", ErrProtocol, f.typ)
		}
	}
}

// frameSink writes to one stream as frames of typ.
type frameSink struct {
	fw  *frameWriter
	typ byte
	id  uint32
}

func (s *frameSink) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if err := s.fw.write(s.typ, s.id, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// ValidID reports whether id may name a hub on the wire: 1 to 128
// characters of letters, digits, '-', '_' and '.', not starting with '.'.
func ValidID(id string) bool {
	if id == "" || len(id) > 128 || id[0] == '.' {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_', c == '.':
		default:
			return false
		}
	}
	return true
}
