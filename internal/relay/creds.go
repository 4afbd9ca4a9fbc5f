// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package relay

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
)

// Credentials is what a NATS credentials file says about its user.
type Credentials struct {
	// Name is the user JWT's name ("nsc add user NAME"), Public its nkey.
	Name, Public string
	// Account is the account that issued the user.
	Account string
	// Expires is when the JWT expires, zero for never.
	Expires time.Time
}

// maxCredsBytes bounds what is read of a credentials file (a real one is
// well under 4 KiB).
const maxCredsBytes = 64 << 10

// LoadCredentials reads and checks a NATS credentials file (a user JWT and
// its nkey seed, as "nsc generate creds" writes it) before anything
// connects with it: nats.go would read it only at connect time, and a
// relay that retries for ever would hide a missing, malformed or expired
// file behind endless reconnects. The errors name the file and what is
// wrong with it; the seed is never part of them.
func LoadCredentials(path string) (Credentials, error) {
	var c Credentials
	fail := func(format string, a ...any) (Credentials, error) {
		return c, fmt.Errorf("NATS credentials file %s: "+format, append([]any{path}, a...)...)
	}
	st, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fail("does not exist")
	case err != nil:
		return fail("%v", errors.Unwrap(err))
	case !st.Mode().IsRegular():
		return fail("not a regular file")
	case st.Size() > maxCredsBytes:
		return fail("%d bytes, not a credentials file (a user JWT and an nkey seed)", st.Size())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return fail("%v", errors.Unwrap(err))
	}
	defer wipe(data)
	if !bytes.Contains(data, []byte("-----BEGIN NATS USER JWT-----")) {
		return fail("no user JWT in it (\"-----BEGIN NATS USER JWT-----\"; write it with \"nsc generate creds\")")
	}
	tok, err := jwt.ParseDecoratedJWT(data)
	if err != nil {
		return fail("the user JWT: %v", err)
	}
	claims, err := jwt.DecodeUserClaims(tok)
	if err != nil {
		return fail("the user JWT is not valid (%v)", err)
	}
	c = Credentials{Name: claims.Name, Public: claims.Subject, Account: claims.IssuerAccount}
	if c.Account == "" {
		c.Account = claims.Issuer
	}
	if claims.Expires != 0 {
		c.Expires = time.Unix(claims.Expires, 0)
	}
	kp, err := jwt.ParseDecoratedUserNKey(data)
	if err != nil {
		return fail("no user nkey seed in it (%v)", err)
	}
	defer kp.Wipe()
	pub, err := kp.PublicKey()
	if err != nil || pub != claims.Subject {
		return fail("its nkey seed is not the key of its user JWT (%s)", claims.Subject)
	}
	now := time.Now()
	if !c.Expires.IsZero() && !now.Before(c.Expires) {
		return fail("the user JWT of %q expired at %s; issue new credentials", c.Name, c.Expires.UTC().Format(time.RFC3339))
	}
	if claims.NotBefore != 0 && now.Before(time.Unix(claims.NotBefore, 0)) {
		return fail("the user JWT of %q is not valid before %s", c.Name, time.Unix(claims.NotBefore, 0).UTC().Format(time.RFC3339))
	}
	return c, nil
}

func wipe(b []byte) {
	for i := range b {
		b[i] = 'x'
	}
}

// RefusedError is Run's error when the NATS server refused the relay's
// authentication twice in a row and nats.go gave up the connection.
type RefusedError struct{ Err error }

func (e *RefusedError) Error() string {
	return fmt.Sprintf("the NATS server refuses this relay's authentication, giving up: %v", e.Err)
}

func (e *RefusedError) Unwrap() error { return e.Err }

// IsAuthError reports whether err is the NATS server refusing to
// authenticate or authorise a connection (unknown account or user, an
// expired or revoked JWT, a wrong password).
func IsAuthError(err error) bool {
	if err == nil {
		return false
	}
	for _, e := range []error{nats.ErrAuthorization, nats.ErrAuthExpired, nats.ErrAuthRevoked, nats.ErrAccountAuthExpired} {
		if errors.Is(err, e) {
			return true
		}
	}
	// nats.go passes some of the server's -ERR lines on as new errors
	// with the server's words ("nats: User Authentication Expired"
	// when a reconnect was refused), not as its sentinels.
	msg := strings.ToLower(err.Error())
	for _, s := range []string{"authorization violation", "authentication expired", "authentication revoked"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

// ExplainRefusal adds to a refusal by the server what the credentials
// file says, when there is one: a reason found in the file itself (it
// expired since), else who it names.
func ExplainRefusal(err error, credsPath string) string {
	msg := err.Error()
	if credsPath == "" || !IsAuthError(err) {
		return msg
	}
	c, cerr := LoadCredentials(credsPath)
	if cerr != nil {
		return msg + "; " + cerr.Error()
	}
	return fmt.Sprintf("%s; NATS credentials file %s (user %q of account %s): an account or user the server does not know or has revoked",
		msg, credsPath, c.Name, c.Account)
}
