// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package dnsfwd

import (
	"slices"
	"testing"
)

type lruItem struct {
	v int
	lruLink[lruItem]
}

func lruOrder(l *lruList[lruItem, *lruItem]) (fwd, back []int) {
	for e := l.head; e != nil; e = e.next {
		fwd = append(fwd, e.v)
	}
	for e := l.tail; e != nil; e = e.prev {
		back = append(back, e.v)
	}
	return fwd, back
}

func TestLRUList(t *testing.T) {
	var l lruList[lruItem, *lruItem]
	items := make([]*lruItem, 4)
	for i := range items {
		items[i] = &lruItem{v: i}
		l.pushFront(items[i])
	}
	steps := []struct {
		do   func()
		want []int
	}{
		{func() {}, []int{3, 2, 1, 0}},
		{func() { l.moveToFront(items[0]) }, []int{0, 3, 2, 1}}, // the tail
		{func() { l.moveToFront(items[0]) }, []int{0, 3, 2, 1}}, // already first
		{func() { l.moveToFront(items[2]) }, []int{2, 0, 3, 1}}, // a middle one
		{func() { l.unlink(items[1]) }, []int{2, 0, 3}},         // the tail
		{func() { l.unlink(items[2]) }, []int{0, 3}},            // the head
		{func() { l.unlink(items[0]); l.unlink(items[3]) }, nil},
	}
	for i, s := range steps {
		s.do()
		fwd, back := lruOrder(&l)
		slices.Reverse(back)
		if !slices.Equal(fwd, s.want) || !slices.Equal(back, s.want) {
			t.Fatalf("step %d: forward %v, backward (reversed) %v, want %v", i, fwd, back, s.want)
		}
	}
}
