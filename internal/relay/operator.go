// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package relay

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// Operator is the fleet as an operator sees it through NATS: the
// requests of every host, and verdicts sent to the host that holds one.
// Which hosts it may answer for is the NATS server's decision.
type Operator struct {
	nc   *nats.Conn
	subj Subjects
	name string

	mu     sync.Mutex
	perms  []error       // permission violations the server reported
	permCh chan struct{} // signalled on each
	closed chan struct{} // closed when the connection is closed for good
	// Notes receives the connection's state changes, as lines for a
	// person ("NATS connection lost, reconnecting"); never blocks.
	Notes chan string
	// Credentials is the credentials file the connection uses, if any,
	// to explain the server's refusals with (ExplainRefusal).
	Credentials string
}

// DialOperator connects as operator name (the last token of the decide
// subjects, which the server's permissions must bind to the user).
func DialOperator(url, prefix, name string, opts ...nats.Option) (*Operator, error) {
	if !ValidOperator(name) {
		return nil, fmt.Errorf("operator name %q: 1 to 27 of a-z, 0-9, '-' and '_' (--nats-operator)", name)
	}
	if prefix == "" {
		prefix = DefaultPrefix
	}
	o := &Operator{subj: Subjects{Prefix: prefix}, name: name, permCh: make(chan struct{}, 1),
		closed: make(chan struct{}), Notes: make(chan string, 16)}
	note := func(s string) {
		select {
		case o.Notes <- s:
		default:
		}
	}
	opts = append([]nats.Option{nats.Name("clearancectl " + name), nats.Timeout(5 * time.Second),
		nats.MaxReconnects(-1), nats.ReconnectWait(time.Second),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				note("NATS connection lost (" + err.Error() + "), reconnecting")
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) { note("NATS reconnected to " + c.ConnectedUrlRedacted()) }),
		nats.ClosedHandler(func(*nats.Conn) { close(o.closed) }),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			if errors.Is(err, nats.ErrPermissionViolation) {
				o.mu.Lock()
				o.perms = append(o.perms, err)
				o.mu.Unlock()
				select {
				case o.permCh <- struct{}{}:
				default:
				}
			}
		})}, opts...)
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, fmt.Errorf("NATS %s: %w", redact(url), err)
	}
	o.nc = nc
	return o, nil
}

// Close closes the connection.
func (o *Operator) Close() { o.nc.Close() }

// Closed is closed when the connection is closed for good.
func (o *Operator) Closed() <-chan struct{} { return o.closed }

// Conn is the NATS connection.
func (o *Operator) Conn() *nats.Conn { return o.nc }

// Subjects are the operator's subjects.
func (o *Operator) Subjects() Subjects { return o.subj }

// Pending asks every relay for its pending requests and collects the
// answers that arrive within wait.
func (o *Operator) Pending(ctx context.Context, wait time.Duration) ([]Blocked, error) {
	out := []Blocked{}
	err := o.gather(ctx, o.subj.FleetPending(), wait, func(data []byte) {
		var bs []Blocked
		if json.Unmarshal(data, &bs) == nil {
			out = append(out, bs...)
		}
	})
	return out, err
}

// Presence asks every relay for its host's containers and collects the
// answers that arrive within wait, sorted by host.
func (o *Operator) Presence(ctx context.Context, wait time.Duration) ([]Presence, error) {
	out := []Presence{}
	err := o.gather(ctx, o.subj.FleetPresence(), wait, func(data []byte) {
		var p Presence
		if json.Unmarshal(data, &p) == nil {
			out = append(out, p)
		}
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Host < out[j].Host })
	return out, err
}

// gather sends a request to every relay and hands each answer that
// arrives within wait to add.
func (o *Operator) gather(ctx context.Context, subject string, wait time.Duration, add func([]byte)) error {
	inbox := o.nc.NewInbox()
	ch := make(chan *nats.Msg, 256)
	sub, err := o.nc.ChanSubscribe(inbox, ch)
	if err != nil {
		return err
	}
	defer sub.Unsubscribe()
	if err := o.nc.PublishRequest(subject, inbox, nil); err != nil {
		return err
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	for {
		select {
		case m := <-ch:
			add(m.Data)
		case <-t.C:
			return o.permErr(subject)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Decide sends a verdict to the relay of host. A retry of the same
// request (same VerdictID) is answered with the first answer. The error
// is for NATS failures (no relay, no permission, timeout); the hub's
// refusals are in the reply.
func (o *Operator) Decide(ctx context.Context, host, container string, req DecideRequest) (DecideReply, error) {
	if !ValidToken(host) || !ValidToken(container) {
		return DecideReply{}, fmt.Errorf("host %q / container %q: letters, digits, '-' and '_'", host, container)
	}
	if req.VerdictID == "" {
		var b [12]byte
		rand.Read(b[:])
		req.VerdictID = hex.EncodeToString(b[:])
	}
	data, _ := json.Marshal(req)
	subject := o.subj.Decide(host, container, o.name)
	var reply DecideReply
	for attempt := 0; ; attempt++ {
		m, err := o.request(ctx, subject, data, 10*time.Second)
		switch {
		case errors.Is(err, errRefused):
			return reply, o.permErr(subject)
		case err == nil:
			if err := json.Unmarshal(m.Data, &reply); err != nil {
				return reply, fmt.Errorf("host %s answered garbage: %v", host, err)
			}
			return reply, nil
		case errors.Is(err, nats.ErrNoResponders):
			if perr := o.permErr(subject); perr != nil {
				return reply, perr
			}
			return reply, fmt.Errorf("no relay answers for host %s (it is down, not connected, or not called %q): nothing applied", host, host)
		case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout):
			if perr := o.permErr(subject); perr != nil {
				return reply, perr
			}
			// The request or its answer may have been lost: the same
			// verdict id is applied at most once, so ask again.
			if attempt < 1 && ctx.Err() == nil {
				continue
			}
			return reply, fmt.Errorf("host %s did not answer in time (verdict id %s; it may still apply, once)", host, req.VerdictID)
		default:
			return reply, fmt.Errorf("NATS: %w", err)
		}
	}
}

var errRefused = errors.New("refused")

// request is RequestWithContext that gives up as soon as the server
// reports a permission violation for subject.
func (o *Operator) request(ctx context.Context, subject string, data []byte, timeout time.Duration) (*nats.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	type result struct {
		m   *nats.Msg
		err error
	}
	done := make(chan result, 1)
	go func() {
		m, err := o.nc.RequestWithContext(ctx, subject, data)
		done <- result{m, err}
	}()
	for {
		select {
		case r := <-done:
			return r.m, r.err
		case <-o.permCh:
			if o.permErr(subject) != nil {
				cancel()
				<-done
				return nil, errRefused
			}
		}
	}
}

// permErr returns the server's permission violation for subject, if it
// reported one (the server refuses the publish and says so
// asynchronously).
func (o *Operator) permErr(subject string) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, e := range o.perms {
		if strings.Contains(e.Error(), subject) {
			return fmt.Errorf("the NATS server refused: %s is not yours to publish (its permissions decide who may answer for which host); nothing applied", subject)
		}
	}
	return nil
}

// Describe renders a reply for a person.
func (r DecideReply) Describe() string {
	if r.OK {
		s := "allowed"
		if r.Action == "deny" {
			s = "denied"
		}
		return s + " on " + r.Host + "/" + r.Container + " (" + r.Scope + ")"
	}
	return r.Message
}
