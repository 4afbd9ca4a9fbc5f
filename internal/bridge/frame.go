// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

// Package bridge carries clearance's hub connections over one byte
// stream, such as the stdin and stdout of "ssh host clearancectl bridge".
//
// The far side ([Serve]) finds the hubs of the user it runs as, announces
// them, and connects to a hub's socket when the near side opens a stream
// to it. The near side ([Dial]) starts the transport command, and gives
// every announced hub a local unix socket in a private directory
// (<dir>/<id>/hub.sock), so every varlink client of a hub — clearancectl's
// watch, pending, allow, deny, status — works against the remote hubs
// unchanged. Streams are plain byte pipes: the bridge never parses what a
// hub and its client say to each other, so the hub's own checks (its
// SO_PEERCRED uid is the far-side user's, as the kernel reports it) and
// its errors (AlreadyDecided, UnknownRequest) hold as they do locally.
//
// # Wire format
//
// Frames of a 9-byte header — type (1 byte), stream (uint32, big endian),
// payload length (uint32, big endian) — and the payload, at most
// [MaxPayload] bytes:
//
//	H  far → near  hubs: JSON [Hello], on start and whenever the set changes
//	O  near → far  open stream to the hub whose id is the payload
//	D  both        data of a stream
//	C  both        close a stream; the payload, if any, says why
//	X  near → far  run a clearancectl command; payload: JSON array of args
//	E  far → near  standard error of a command
//	Q  far → near  a command's exit status (decimal); ends its stream
//
// Nothing listens on a network port: authentication, encryption and
// authorisation are the transport's (SSH) and the far side's kernel's.
package bridge

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
)

// Frame types.
const (
	frameHubs   = 'H'
	frameOpen   = 'O'
	frameData   = 'D'
	frameClose  = 'C'
	frameExec   = 'X'
	frameStderr = 'E'
	frameExit   = 'Q'
)

// MaxPayload is the largest payload of one frame. Data is sent in chunks
// of at most this size.
const MaxPayload = 64 << 10

// headerLen is the size of a frame header.
const headerLen = 9

// Version is the bridge protocol version announced in [Hello].
const Version = 1

// ErrProtocol reports a malformed frame; the session ends.
var ErrProtocol = errors.New("bridge protocol violation")

// Hello is what the far side announces in an H frame.
type Hello struct {
	// Version is the protocol version, [Version].
	Version int `json:"version"`
	// Host is the far side's host name, as it knows itself.
	Host string `json:"host"`
	// UID and User are who the bridge runs as on the far side (its
	// kernel uid and the user database's name for it).
	UID  int    `json:"uid"`
	User string `json:"user"`
	// Hubs are the ids of the hubs the far side found.
	Hubs []string `json:"hubs"`
}

type frame struct {
	typ     byte
	stream  uint32
	payload []byte
}

// readFrame reads one frame. A payload longer than MaxPayload or an
// unknown type is ErrProtocol.
func readFrame(r *bufio.Reader) (frame, error) {
	var h [headerLen]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return frame{}, err
	}
	f := frame{typ: h[0], stream: binary.BigEndian.Uint32(h[1:5])}
	n := binary.BigEndian.Uint32(h[5:9])
	switch f.typ {
	case frameHubs, frameOpen, frameData, frameClose, frameExec, frameStderr, frameExit:
	default:
		return frame{}, fmt.Errorf("%w: unknown frame type 0x%02x", ErrProtocol, f.typ)
	}
	if n > MaxPayload {
		return frame{}, fmt.Errorf("%w: frame of %d bytes (at most %d)", ErrProtocol, n, MaxPayload)
	}
	f.payload = make([]byte, n)
	if _, err := io.ReadFull(r, f.payload); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return frame{}, err
	}
	return f, nil
}

// frameWriter writes whole frames to w; safe for concurrent use.
type frameWriter struct {
	mu  sync.Mutex
	w   *bufio.Writer
	err error
}

func newFrameWriter(w io.Writer) *frameWriter {
	return &frameWriter{w: bufio.NewWriterSize(w, 2*MaxPayload)}
}

// write sends one frame, splitting data frames longer than MaxPayload.
// After the first error every write fails with it.
func (fw *frameWriter) write(typ byte, stream uint32, payload []byte) error {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	for {
		if fw.err != nil {
			return fw.err
		}
		chunk := payload
		if len(chunk) > MaxPayload {
			chunk = chunk[:MaxPayload]
		}
		var h [headerLen]byte
		h[0] = typ
		binary.BigEndian.PutUint32(h[1:5], stream)
		binary.BigEndian.PutUint32(h[5:9], uint32(len(chunk)))
		if _, err := fw.w.Write(h[:]); err != nil {
			fw.err = err
			continue
		}
		if _, err := fw.w.Write(chunk); err != nil {
			fw.err = err
			continue
		}
		payload = payload[len(chunk):]
		if len(payload) == 0 {
			if err := fw.w.Flush(); err != nil {
				fw.err = err
				continue
			}
			return nil
		}
	}
}
