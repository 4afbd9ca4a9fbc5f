// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package dnsfwd

// lruLink is the part of an entry an [lruList] links through; the entry
// embeds it.
type lruLink[T any] struct {
	prev, next *T
}

func (l *lruLink[T]) link() *lruLink[T] { return l }

// linked is a pointer to an entry that embeds lruLink.
type linked[T any] interface {
	*T
	link() *lruLink[T]
}

// lruList is an intrusive doubly linked list, most recently used first:
// no allocation per entry, and every operation O(1). Not safe for
// concurrent use: its owner's lock guards it.
type lruList[T any, P linked[T]] struct {
	head, tail *T
}

// pushFront links e, not in the list, as the most recently used.
func (l *lruList[T, P]) pushFront(e *T) {
	n := P(e).link()
	n.prev, n.next = nil, l.head
	if l.head != nil {
		P(l.head).link().prev = e
	}
	l.head = e
	if l.tail == nil {
		l.tail = e
	}
}

// unlink takes e, which is in the list, out of it.
func (l *lruList[T, P]) unlink(e *T) {
	n := P(e).link()
	if n.prev != nil {
		P(n.prev).link().next = n.next
	} else {
		l.head = n.next
	}
	if n.next != nil {
		P(n.next).link().prev = n.prev
	} else {
		l.tail = n.prev
	}
	n.prev, n.next = nil, nil
}

// moveToFront makes e, which is in the list, the most recently used.
func (l *lruList[T, P]) moveToFront(e *T) {
	if l.head == e {
		return
	}
	l.unlink(e)
	l.pushFront(e)
}
