// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package varlinkapi

import (
	"strings"
	"testing"
)

const paramsIDL = `interface org.example.params
type Pair (a: int, b: ?string)
type Color (red, green)
type Loop (next: ?Loop)
method Kinds(s: string, i: int, f: float, b: bool, o: object, m: ?int) -> ()
method Nested(p: Pair, c: Color, l: []Pair, d: [string]Color, n: ?[]?int, loop: Loop) -> ()
method None() -> ()
method Stream(x: ?string) -> (y: string)
`

func TestParamCheck(t *testing.T) {
	p, err := NewParamCheck([]string{paramsIDL, ServiceDescription}, "org.example.params.Stream")
	if err != nil {
		t.Fatal(err)
	}
	const kinds = "org.example.params.Kinds"
	const nested = "org.example.params.Nested"
	good := `"p":{"a":1},"c":"red","l":[],"d":{},"loop":{}`
	tests := []struct {
		name, method string
		more         bool
		params       string // "" for none
		want         string
	}{
		{"every kind", kinds, false, `{"s":"x","i":-9223372036854775808,"f":1.5e3,"b":false,"o":null}`, ""},
		{"an int float is a float", kinds, false, `{"s":"","i":0,"f":2,"b":true,"o":{"any":[1]}}`, ""},
		{"an optional left out or null", kinds, false, `{"s":"","i":0,"f":0,"b":true,"o":1,"m":null}`, ""},
		{"no parameters names the first declared", kinds, false, "", "s"},
		{"null parameters", kinds, false, `null`, "s"},
		{"int with a fraction", kinds, false, `{"s":"","i":1.0,"f":0,"b":true,"o":1}`, "i"},
		{"int with an exponent", kinds, false, `{"s":"","i":1e3,"f":0,"b":true,"o":1}`, "i"},
		{"int beyond 64 bits", kinds, false, `{"s":"","i":9223372036854775808,"f":0,"b":true,"o":1}`, "i"},
		{"int as a bool", kinds, false, `{"s":"","i":true,"f":0,"b":true,"o":1}`, "i"},
		{"float as a string", kinds, false, `{"s":"","i":1,"f":"1","b":true,"o":1}`, "f"},
		{"bool as a number", kinds, false, `{"s":"","i":1,"f":1,"b":0,"o":1}`, "b"},
		{"string null", kinds, false, `{"s":null,"i":1,"f":1,"b":true,"o":1}`, "s"},
		{"optional ill-typed", kinds, false, `{"s":"","i":1,"f":1,"b":true,"o":1,"m":"2"}`, "m"},
		{"object is required too", kinds, false, `{"s":"","i":1,"f":1,"b":true}`, "o"},
		{"extra after good ones", kinds, false, `{"s":"","i":1,"f":1,"b":true,"o":1,"z":1,"a":2}`, "z"},
		{"a key sent twice: the last value counts", kinds, false, `{"s":1,"s":"","i":1,"f":1,"b":true,"o":1}`, ""},
		{"nested good", nested, false, `{"p":{"a":1,"b":null},"c":"green","l":[{"a":2,"b":"x"}],"d":{"k":"red"},"n":[1,null],"loop":{"next":{"next":null}}}`, ""},
		{"struct missing a field", nested, false, `{"p":{"b":"x"},"c":"red","l":[],"d":{},"loop":{}}`, "p"},
		{"struct with an unknown field", nested, false, `{"p":{"a":1,"q":1},"c":"red","l":[],"d":{},"loop":{}}`, "p"},
		{"enum not one of its names", nested, false, `{"p":{"a":1},"c":"blue","l":[],"d":{},"loop":{}}`, "c"},
		{"array element ill-typed", nested, false, `{"p":{"a":1},"c":"red","l":[{"a":"1"}],"d":{},"loop":{}}`, "l"},
		{"array null", nested, false, `{"p":{"a":1},"c":"red","l":null,"d":{},"loop":{}}`, "l"},
		{"map value ill-typed", nested, false, `{"p":{"a":1},"c":"red","l":[],"d":{"k":1},"loop":{}}`, "d"},
		{"map as an array", nested, false, `{"p":{"a":1},"c":"red","l":[],"d":[],"loop":{}}`, "d"},
		{"optional array of optionals", nested, false, `{` + good + `,"n":[null,"x"]}`, "n"},
		{"recursive type", nested, false, `{"p":{"a":1},"c":"red","l":[],"d":{},"loop":{"next":{"next":1}}}`, "loop"},
		{"no declared parameters", "org.example.params.None", false, `{"x":1}`, "x"},
		{"streaming with more", "org.example.params.Stream", true, `{"x":1}`, "x"},
		{"streaming without more is the handler's", "org.example.params.Stream", false, `{"x":1}`, ""},
		{"unknown method is the library's", "org.example.params.Nope", false, `{"x":1}`, ""},
		{"org.varlink.service", "org.varlink.service.GetInterfaceDescription", false, `{}`, "interface"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var params []byte
			if tt.params != "" {
				params = []byte(tt.params)
			}
			if got := p.Check(tt.method, tt.more, params); got != tt.want {
				t.Fatalf("Check(%s, %s) = %q, want %q", tt.method, tt.params, got, tt.want)
			}
		})
	}
}

func TestNewParamCheckErrors(t *testing.T) {
	if _, err := NewParamCheck([]string{"interface broken\nmethod ("}); err == nil {
		t.Error("a broken description was accepted")
	}
	_, err := NewParamCheck([]string{paramsIDL}, "org.example.params.Missing")
	if err == nil || !strings.Contains(err.Error(), "org.example.params.Missing") {
		t.Errorf("an undescribed streaming method: %v", err)
	}
}
