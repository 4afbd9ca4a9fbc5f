// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package ingest

import (
	"bytes"
	"errors"
	"io"
)

// errLineTooLong is returned by lineReader.next, once per line, for a line
// longer than the limit; the line has been discarded and the reader can go
// on with the next one.
var errLineTooLong = errors.New("line too long")

// initialLineBuf is the buffer a connection starts with: producer lines are
// a few hundred bytes, and an idle connection should cost little.
const initialLineBuf = 1024

// lineReader splits a byte stream into '\n'-terminated lines with bounded
// memory: it never holds more than max+1 bytes. A line over max bytes is
// discarded up to its newline and reported as errLineTooLong, after which
// reading continues. Not safe for concurrent use.
type lineReader struct {
	r   io.Reader
	max int // longest line accepted, without its '\n'

	buf        []byte
	start, end int  // unread data is buf[start:end]
	scanned    int  // buf[start:scanned] has no '\n'
	discarding bool // inside an oversized line
	err        error
}

func newLineReader(r io.Reader, max int) *lineReader {
	return &lineReader{r: r, max: max}
}

// next returns the next line without its '\n'. The slice is valid only until
// the following call. At EOF a final unterminated line is returned before
// io.EOF (as the seed's readline did). Read errors are returned as they are.
func (lr *lineReader) next() ([]byte, error) {
	for {
		if i := bytes.IndexByte(lr.buf[lr.scanned:lr.end], '\n'); i >= 0 {
			nl := lr.scanned + i
			line := lr.buf[lr.start:nl]
			lr.start, lr.scanned = nl+1, nl+1
			if lr.discarding {
				lr.discarding = false
				return nil, errLineTooLong
			}
			return line, nil
		}
		lr.scanned = lr.end
		switch {
		case lr.discarding:
			// Still inside the oversized line: nothing here is kept.
			lr.start, lr.end, lr.scanned = 0, 0, 0
		case lr.end-lr.start > lr.max:
			// No newline within max+1 bytes: this line is too long. Drop
			// what we hold and keep dropping up to the next newline.
			lr.discarding = true
			lr.start, lr.end, lr.scanned = 0, 0, 0
		}
		if lr.err != nil {
			if lr.start < lr.end && !lr.discarding {
				line := lr.buf[lr.start:lr.end]
				lr.start, lr.scanned = lr.end, lr.end
				return line, nil
			}
			if lr.discarding && errors.Is(lr.err, io.EOF) {
				lr.discarding = false
				return nil, errLineTooLong
			}
			return nil, lr.err
		}
		lr.fill()
	}
}

// fill makes room in the buffer and reads once into it.
func (lr *lineReader) fill() {
	if lr.start == lr.end {
		// Empty: start over, and give a buffer grown by a long line back.
		lr.start, lr.end, lr.scanned = 0, 0, 0
		if cap(lr.buf) > initialLineBuf {
			lr.buf = nil
		}
	}
	if lr.buf == nil {
		lr.buf = make([]byte, min(initialLineBuf, lr.max+1))
	}
	if lr.end == len(lr.buf) {
		if lr.start > 0 {
			n := copy(lr.buf, lr.buf[lr.start:lr.end])
			lr.scanned -= lr.start
			lr.start, lr.end = 0, n
		} else {
			// Full of one unterminated line of at most max bytes: grow,
			// never beyond max+1.
			nb := make([]byte, min(2*len(lr.buf), lr.max+1))
			copy(nb, lr.buf[:lr.end])
			lr.buf = nb
		}
	}
	n, err := lr.r.Read(lr.buf[lr.end:])
	lr.end += n
	if err != nil {
		lr.err = err
	}
}
