// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package varlinkapi

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/varlink/go/varlink"
	"github.com/varlink/go/varlink/idl"
)

// InvalidParameter is the error sent for a call whose parameters do not
// match the method's declaration.
const InvalidParameter = "org.varlink.service.InvalidParameter"

// ParamCheck checks a call's parameters against its method's declaration
// before the call is dispatched, the way asyncvarlink (the varlink library
// of the Python seed) does, so that a bad call gets the seed's answer,
// org.varlink.service.InvalidParameter naming the parameter:
//
//  1. the declared parameters in declaration order: the first that is
//     missing (and not optional) or whose value does not have the declared
//     type is named;
//  2. then the call's parameters in the order they were sent: the first
//     that the method does not declare is named.
//
// A value has the declared type when: a string is a JSON string; a bool is
// true or false; an int is a JSON number without fraction or exponent that
// fits in 64 bits; a float is any number; an object is anything; null only
// for an optional (?T) type; an array or map holds only values of its
// element type; a struct has every field it declares, of its type
// (optional ones may be missing), and no other; an enum is one of its
// names. (asyncvarlink also takes true and false for an int, as Python's
// bool is an int; a Go handler could not decode them, so they are refused.)
// Where the parameters object or its "parameters" key is missing or null,
// the call has no parameters.
//
// A streaming method called without "more" is not checked: its handler
// answers org.varlink.service.ExpectedMore first, as asyncvarlink does.
// Methods ParamCheck does not know (another interface, a typo) are not
// checked either: the library answers them.
//
// A ParamCheck is immutable after [NewParamCheck] and safe for concurrent
// use.
type ParamCheck struct {
	methods   map[string]checkedMethod // fully qualified method name
	streaming map[string]bool
}

type checkedMethod struct {
	in      *idl.Type
	aliases map[string]*idl.Type
}

// ServiceDescription is the description of org.varlink.service, which
// every service serves: GetInfo and GetInterfaceDescription.
const ServiceDescription = `interface org.varlink.service
method GetInfo() -> (vendor: string, product: string, version: string, url: string, interfaces: []string)
method GetInterfaceDescription(interface: string) -> (description: string)
`

// NewParamCheck builds a check for the methods of the interfaces
// described (varlink IDL, as VarlinkGetDescription returns it).
// streaming names, fully qualified, the methods that must be called with
// "more".
func NewParamCheck(descriptions []string, streaming ...string) (*ParamCheck, error) {
	p := &ParamCheck{methods: map[string]checkedMethod{}, streaming: map[string]bool{}}
	for _, d := range descriptions {
		in, err := idl.New(d)
		if err != nil {
			return nil, fmt.Errorf("parse interface description: %w", err)
		}
		aliases := map[string]*idl.Type{}
		for _, a := range in.Aliases {
			aliases[a.Name] = a.Type
		}
		for _, m := range in.Methods {
			p.methods[in.Name+"."+m.Name] = checkedMethod{in: m.In, aliases: aliases}
		}
	}
	for _, s := range streaming {
		if _, ok := p.methods[s]; !ok {
			return nil, fmt.Errorf("streaming method %s is not described", s)
		}
		p.streaming[s] = true
	}
	return p, nil
}

// Check returns the name of the first bad parameter of a call of method
// (fully qualified) with these parameters (the raw JSON of the call's
// "parameters", nil when it had none), or "" when they are good or the
// call is not checked.
func (p *ParamCheck) Check(method string, more bool, params []byte) string {
	m, ok := p.methods[method]
	if !ok || (p.streaming[method] && !more) {
		return ""
	}
	keys, vals, err := objectFields(params)
	if err != nil {
		// The serve loop has checked that parameters is an object.
		return "parameters"
	}
	for _, f := range m.in.Fields {
		v, ok := vals[f.Name]
		if !ok {
			if f.Type.Kind != idl.TypeMaybe {
				return f.Name
			}
			continue
		}
		if !m.valid(v, f.Type) {
			return f.Name
		}
	}
	declared := make(map[string]bool, len(m.in.Fields))
	for _, f := range m.in.Fields {
		declared[f.Name] = true
	}
	for _, k := range keys {
		if !declared[k] {
			return k
		}
	}
	return ""
}

// objectFields decodes a JSON object (or null, or nothing) into its keys,
// in the order they first appear, and their values (the last one of a key
// sent twice, as encoding/json and Python's json both keep).
func objectFields(raw []byte) ([]string, map[string]any, error) {
	vals := map[string]any{}
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return nil, vals, nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil, nil, fmt.Errorf("parameters is not an object")
	}
	var keys []string
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, nil, err
		}
		k, ok := t.(string)
		if !ok {
			return nil, nil, fmt.Errorf("object key is not a string")
		}
		var v any
		if err := dec.Decode(&v); err != nil {
			return nil, nil, err
		}
		if _, seen := vals[k]; !seen {
			keys = append(keys, k)
		}
		vals[k] = v
	}
	return keys, vals, nil
}

// valid reports whether v (decoded with UseNumber) has type t.
func (m checkedMethod) valid(v any, t *idl.Type) bool {
	return validType(v, t, m.aliases, 0)
}

// maxTypeDepth bounds alias resolution (an IDL may not, but a bad one
// could, define a type through itself).
const maxTypeDepth = 64

func validType(v any, t *idl.Type, aliases map[string]*idl.Type, depth int) bool {
	if depth > maxTypeDepth || t == nil {
		return false
	}
	if t.Kind == idl.TypeMaybe {
		return v == nil || validType(v, t.ElementType, aliases, depth+1)
	}
	switch t.Kind {
	case idl.TypeObject:
		return true
	case idl.TypeAlias:
		return validType(v, aliases[t.Alias], aliases, depth+1)
	}
	if v == nil {
		return false
	}
	switch t.Kind {
	case idl.TypeBool:
		_, ok := v.(bool)
		return ok
	case idl.TypeString:
		_, ok := v.(string)
		return ok
	case idl.TypeInt:
		n, ok := v.(json.Number)
		if !ok {
			return false
		}
		_, err := strconv.ParseInt(n.String(), 10, 64)
		return err == nil
	case idl.TypeFloat:
		_, ok := v.(json.Number)
		return ok
	case idl.TypeEnum:
		s, ok := v.(string)
		if !ok {
			return false
		}
		for _, f := range t.Fields {
			if f.Name == s {
				return true
			}
		}
		return false
	case idl.TypeArray:
		a, ok := v.([]any)
		if !ok {
			return false
		}
		for _, e := range a {
			if !validType(e, t.ElementType, aliases, depth+1) {
				return false
			}
		}
		return true
	case idl.TypeMap:
		o, ok := v.(map[string]any)
		if !ok {
			return false
		}
		for _, e := range o {
			if !validType(e, t.ElementType, aliases, depth+1) {
				return false
			}
		}
		return true
	case idl.TypeStruct:
		o, ok := v.(map[string]any)
		if !ok {
			return false
		}
		for k := range o {
			if !hasField(t, k) {
				return false
			}
		}
		for _, f := range t.Fields {
			e, ok := o[f.Name]
			if !ok {
				if f.Type.Kind != idl.TypeMaybe {
					return false
				}
				continue
			}
			if !validType(e, f.Type, aliases, depth+1) {
				return false
			}
		}
		return true
	}
	return false
}

func hasField(t *idl.Type, name string) bool {
	for _, f := range t.Fields {
		if f.Name == name {
			return true
		}
	}
	return false
}

// ReplyError answers c with the error name and its parameters (nil for
// none), in the seed's (asyncvarlink's) byte order:
// {"error":…,"parameters":…}. Unlike [varlink.Call.ReplyError] it also
// sends org.varlink.service errors. A oneway call gets no reply.
func ReplyError(ctx context.Context, c *varlink.Call, name string, params any) error {
	if c.IsOneway() {
		return nil
	}
	return writeError(ctx, c.Conn, name, params)
}
