// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package hubd

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/terok-ai/clearance/internal/hub"
	"github.com/terok-ai/clearance/internal/sd"
	fw1 "github.com/terok-ai/clearance/internal/varlinkapi/orgterokclearancefirewall1"
)

// Names of the descriptors the hub keeps in systemd's file descriptor
// store (FDSTORE=1): they survive a restart of the hub's process and come
// back with the activated sockets.
const (
	fdState = "state" // a memfd with savedState
	fdNFLOG = "nflog" // the bound NFLOG socket
	fdDNS   = "dns-"  // prefix of the DNS forwarder's sockets ("dns-udp4", …)
)

// savedState is what the hub keeps in its state memfd.
type savedState struct {
	Version int       `json:"version"`
	Saved   time.Time `json:"saved"`
	Hub     hub.State `json:"hub"`
	DNS     dnsState  `json:"dns"`
}

// dnsState is the DNS side's part of savedState.
type dnsState struct {
	// Verdicts are the operator's verdicts on names still in force.
	Verdicts []verdictRuleState `json:"verdicts,omitempty"`
	// Forwarder describes the stored forwarder sockets; nil when none.
	Forwarder *forwarderState `json:"forwarder,omitempty"`
}

type verdictRuleState struct {
	Pattern string    `json:"pattern"`
	Action  string    `json:"action"`
	Proto   uint8     `json:"proto"`
	Port    uint16    `json:"port"`
	Until   time.Time `json:"until"`
}

type forwarderState struct {
	Port      int            `json:"port"`
	Mark      int            `json:"mark"`
	Sockets   []string       `json:"sockets"`
	Resolvers []string       `json:"resolvers"`
	Names     []fw1.NameRule `json:"names"`
}

const stateVersion = 1

// maxState bounds the state read back (the pending set is capped, so a
// real state is far smaller).
const maxState = 64 << 20

// stateStore keeps savedState in a memfd that lives in systemd's file
// descriptor store, so the next process of the hub finds it. Writes are
// debounced: at most one every saveEvery after a change.
type stateStore struct {
	f    *os.File
	log  *slog.Logger
	kick chan struct{}
}

// saveEvery is how long after a change the state is written: what a
// kill -9 can lose at most.
const saveEvery = 100 * time.Millisecond

// openStateStore takes over the memfd passed back by systemd (stored, may
// be nil) and reads the state in it, or creates a memfd and hands it to
// the store. Without a store ([sd.ErrNoStore], standalone) it returns a
// nil store and no state: nothing survives a restart then.
func openStateStore(stored *os.File, log *slog.Logger) (*stateStore, *savedState, error) {
	if stored != nil {
		st, err := readState(stored)
		s := &stateStore{f: stored, log: log, kick: make(chan struct{}, 1)}
		if err != nil {
			return s, nil, fmt.Errorf("read the saved state (starting afresh): %w", err)
		}
		return s, st, nil
	}
	fd, err := unix.MemfdCreate("clearance-hub-state", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, nil, fmt.Errorf("memfd: %w", err)
	}
	f := os.NewFile(uintptr(fd), "clearance-hub-state")
	if err := sd.StoreFDs(fdState, f); err != nil {
		f.Close()
		if errors.Is(err, sd.ErrNoStore) {
			return nil, nil, nil
		}
		return nil, nil, fmt.Errorf("store the state memfd: %w", err)
	}
	return &stateStore{f: f, log: log, kick: make(chan struct{}, 1)}, nil, nil
}

// close closes the process's own copy of the memfd (systemd keeps its).
func (s *stateStore) close() {
	if s != nil {
		s.f.Close()
	}
}

// changed schedules a save. It never blocks.
func (s *stateStore) changed() {
	if s == nil {
		return
	}
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// run saves snapshot() after every change (debounced) until ctx ends, and
// once more then.
func (s *stateStore) run(ctx context.Context, snapshot func() savedState) {
	for {
		select {
		case <-ctx.Done():
			s.save(snapshot())
			return
		case <-s.kick:
		}
		select {
		case <-ctx.Done():
		case <-time.After(saveEvery):
		}
		s.save(snapshot())
	}
}

// save writes st: a 4-byte length, a CRC-32 of the JSON, the JSON. A
// process killed in the middle of a write leaves a state that fails its
// checksum and is ignored.
func (s *stateStore) save(st savedState) {
	st.Version, st.Saved = stateVersion, time.Now()
	b, err := json.Marshal(st)
	if err != nil {
		s.log.Warn("save the hub state", "err", err)
		return
	}
	buf := make([]byte, 8, 8+len(b))
	binary.BigEndian.PutUint32(buf, uint32(len(b)))
	binary.BigEndian.PutUint32(buf[4:], crc32.ChecksumIEEE(b))
	buf = append(buf, b...)
	if _, err := s.f.WriteAt(buf, 0); err != nil {
		s.log.Warn("save the hub state", "err", err)
		return
	}
	if err := s.f.Truncate(int64(len(buf))); err != nil {
		s.log.Warn("save the hub state", "err", err)
	}
}

func readState(f *os.File) (*savedState, error) {
	var hdr [8]byte
	if _, err := f.ReadAt(hdr[:], 0); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("empty")
		}
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n > maxState {
		return nil, fmt.Errorf("%d bytes", n)
	}
	b := make([]byte, n)
	if _, err := f.ReadAt(b, 8); err != nil {
		return nil, err
	}
	if crc32.ChecksumIEEE(b) != binary.BigEndian.Uint32(hdr[4:]) {
		return nil, errors.New("checksum mismatch (a write was interrupted)")
	}
	var st savedState
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, err
	}
	if st.Version != stateVersion {
		return nil, fmt.Errorf("version %d, want %d", st.Version, stateVersion)
	}
	return &st, nil
}

// storeFDs replaces what is stored under name; errors are logged (without
// a store nothing survives a restart, which is not a failure).
func storeFDs(log *slog.Logger, name string, files ...*os.File) {
	sd.RemoveFDs(name)
	if len(files) == 0 {
		return
	}
	if err := sd.StoreFDs(name, files...); err != nil && !errors.Is(err, sd.ErrNoStore) {
		log.Warn("keep descriptors across a restart", "name", name, "err", err)
	}
}
