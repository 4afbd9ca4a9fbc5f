// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package relay

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/terok-ai/clearance/internal/audit"
	"github.com/terok-ai/clearance/internal/event"
	"github.com/terok-ai/clearance/internal/hub"
)

// alwaysOf describes the "always" verdict req gave on b. ok is false when
// it cannot be said in the bucket's terms (a port of a protocol other
// than TCP and UDP): it is then not mirrored, rather than widened.
func alwaysOf(b Blocked, policy string, req DecideRequest, by, host string, now time.Time) (a Always, ok bool) {
	a = Always{Policy: policy, Action: req.Action, IP: b.Dest, Name: b.Domain, By: by, Host: host, AtUsec: now.UnixMicro()}
	if !req.AnyPort && b.Port > 0 {
		switch b.Proto {
		case event.ProtoTCP:
			a.Proto, a.Port = "tcp", b.Port
		case event.ProtoUDP:
			a.Proto, a.Port = "udp", b.Port
		default:
			return a, false
		}
	}
	return a, true
}

// Key is a's key in the bucket: the policy, then a digest of what the
// verdict covers (the name, else the address, with protocol and port),
// so allow and deny of the same destination meet on one key.
func (a Always) Key() string {
	target := a.Name
	if target == "" {
		target = a.IP
	}
	sum := sha256.Sum256([]byte(target + "|" + a.Proto + "|" + strconv.FormatInt(a.Port, 10)))
	return a.Policy + "." + hex.EncodeToString(sum[:10])
}

// Validate checks a mirrored verdict before it is applied here: a value
// in the bucket is only as trustworthy as the NATS permissions that
// guard it.
func (a Always) Validate() error {
	switch {
	case a.Policy == "":
		return errors.New("no policy")
	case a.Action != event.ActionAllow && a.Action != event.ActionDeny:
		return fmt.Errorf("action %q", a.Action)
	case a.Proto != "" && a.Proto != "tcp" && a.Proto != "udp":
		return fmt.Errorf("proto %q", a.Proto)
	case a.Port < 0 || a.Port > 65535 || (a.Port != 0) != (a.Proto != ""):
		return fmt.Errorf("port %d with proto %q", a.Port, a.Proto)
	}
	if _, err := netip.ParseAddr(a.IP); err != nil && a.Name == "" {
		return fmt.Errorf("neither an address nor a name: %q", a.IP)
	}
	return nil
}

// errDenyWins is returned by mirror when the bucket holds a deny for
// what an allow covers.
var errDenyWins = errors.New("the fleet already denies it (deny wins); the allow holds on this host only")

// mirror writes a into the bucket. Conflicts: a deny replaces an allow,
// an allow never replaces a deny. The write is a compare-and-set on the
// key's revision, so two hosts deciding at once cannot both win.
func (r *Relay) mirror(ctx context.Context, a Always) error {
	if a.Policy == "" {
		return errors.New("the container has no policy name")
	}
	if err := a.Validate(); err != nil {
		return err
	}
	kv, err := r.bucket(ctx)
	if err != nil {
		return err
	}
	data, _ := json.Marshal(a)
	key := a.Key()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for attempt := 0; attempt < 8; attempt++ {
		e, err := kv.Get(ctx, key)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			if _, err = kv.Create(ctx, key, data); err == nil {
				r.auditMirror(a, "mirrored")
				return nil
			}
		case err != nil:
			return fmt.Errorf("bucket %s: %w", r.cfg.Bucket, err)
		default:
			var cur Always
			json.Unmarshal(e.Value(), &cur)
			if cur.Action == event.ActionDeny && a.Action == event.ActionAllow {
				r.auditMirror(a, "kept out: the fleet denies it ("+cur.By+" on "+cur.Host+")")
				return errDenyWins
			}
			if cur.Action == a.Action {
				return nil
			}
			if _, err = kv.Update(ctx, key, data, e.Revision()); err == nil {
				r.auditMirror(a, "mirrored, replacing "+cur.Action+" by "+cur.By)
				return nil
			}
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		// Someone else wrote the key meanwhile: read it again.
	}
	return fmt.Errorf("bucket %s: key %s kept changing", r.cfg.Bucket, key)
}

func (r *Relay) auditMirror(a Always, what string) {
	r.log.Info("always verdict "+what, "MESSAGE_ID", audit.MsgMirrored, "CLEARANCE_POLICY", a.Policy,
		"CLEARANCE_ACTION", a.Action, "CLEARANCE_DEST", a.IP, "CLEARANCE_DOMAIN", a.Name,
		"CLEARANCE_PORT", strconv.FormatInt(a.Port, 10), "CLEARANCE_PROTO", a.Proto,
		"CLEARANCE_SCOPE", hub.ScopeAlways, "CLEARANCE_CHANNEL", a.By, "CLEARANCE_HOST", a.Host)
}

// bucket returns the key-value bucket once the relay has it.
func (r *Relay) bucket(ctx context.Context) (jetstream.KeyValue, error) {
	select {
	case <-r.kvReady:
		return r.kv, nil
	default:
	}
	t := time.NewTimer(5 * time.Second)
	defer t.Stop()
	select {
	case <-r.kvReady:
		return r.kv, nil
	case <-t.C:
		return nil, fmt.Errorf("bucket %s not reachable (NATS down or JetStream disabled)", r.cfg.Bucket)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// mirrorLoop opens (or creates) the bucket, then applies every verdict
// of other hosts to this host's policies, the ones already there first.
// It starts over when the watch breaks.
func (r *Relay) mirrorLoop(ctx context.Context) {
	js, err := jetstream.New(r.nc.Load())
	if err != nil {
		r.log.Error("JetStream", "err", err)
		return
	}
	backoff := 250 * time.Millisecond
	for ctx.Err() == nil {
		kv, err := r.openBucket(ctx, js)
		if err == nil {
			select {
			case <-r.kvReady:
			default:
				r.kv = kv
				close(r.kvReady)
			}
			err = r.watch(ctx, kv)
		}
		if ctx.Err() != nil {
			return
		}
		r.log.Debug("always bucket", "err", err)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

func (r *Relay) openBucket(ctx context.Context, js jetstream.JetStream) (jetstream.KeyValue, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, r.cfg.Bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: r.cfg.Bucket, History: 8,
			Description: "clearance: always verdicts of the fleet"})
		if errors.Is(err, jetstream.ErrBucketExists) {
			kv, err = js.KeyValue(ctx, r.cfg.Bucket)
		}
	}
	return kv, err
}

func (r *Relay) watch(ctx context.Context, kv jetstream.KeyValue) error {
	w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return err
	}
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("watch ended")
			}
			if e == nil {
				continue // the end of the values already there
			}
			r.adopt(ctx, e)
		}
	}
}

// adopt applies another host's verdict here.
func (r *Relay) adopt(ctx context.Context, e jetstream.KeyValueEntry) {
	var a Always
	if err := json.Unmarshal(e.Value(), &a); err != nil {
		r.log.Warn("always bucket: undecodable value", "key", e.Key(), "err", err)
		return
	}
	if a.Host == r.cfg.Host {
		return // given here: this host's policy has it already
	}
	if err := a.Validate(); err != nil || a.Key() != e.Key() {
		r.log.Warn("always bucket: refused value", "MESSAGE_ID", audit.MsgAdopted, "key", e.Key(), "err", err,
			"CLEARANCE_CHANNEL", a.By, "CLEARANCE_HOST", a.Host)
		return
	}
	if r.cfg.Adopter == nil {
		r.log.Info("always verdict of the fleet seen (no adopter configured)", "key", e.Key())
		return
	}
	err := r.cfg.Adopter.Adopt(ctx, a)
	attrs := []any{"MESSAGE_ID", audit.MsgAdopted, "CLEARANCE_POLICY", a.Policy, "CLEARANCE_ACTION", a.Action,
		"CLEARANCE_DEST", a.IP, "CLEARANCE_DOMAIN", a.Name, "CLEARANCE_PORT", strconv.FormatInt(a.Port, 10),
		"CLEARANCE_PROTO", a.Proto, "CLEARANCE_SCOPE", hub.ScopeAlways, "CLEARANCE_CHANNEL", a.By, "CLEARANCE_HOST", a.Host}
	if err != nil {
		r.log.Warn("always verdict of the fleet not adopted", append(attrs, "err", err)...)
		return
	}
	r.log.Info("always verdict of the fleet adopted", attrs...)
}
