// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package natslab

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"
)

// The decentralised ("operator") mode of nats-server, as production
// fleets run it (docs/fleet.md): an operator whose key signs the
// accounts, an account "clearance" with JetStream whose key signs the
// users, a system account, all given to the server by "operator:" and
// "resolver: MEMORY" with "resolver_preload". Users authenticate with
// credentials files (user JWT and nkey seed), as nsc writes them.

// jwtLab holds the keys of a server started by StartJWT.
type jwtLab struct {
	operator, account, system nkeys.KeyPair
	accountPub                string
	creds                     map[string]string // user name → file
}

// StartJWT is Start in operator mode: every user gets a credentials file
// (Creds) with a JWT carrying the same permissions the password
// configuration gives it; URL carries no password.
func StartJWT(tb testing.TB, users ...User) *Server {
	tb.Helper()
	return startMode(tb, false, true, users)
}

func newJWTLab(tb testing.TB) *jwtLab {
	tb.Helper()
	mk := func(f func() (nkeys.KeyPair, error)) nkeys.KeyPair {
		kp, err := f()
		if err != nil {
			tb.Fatal(err)
		}
		return kp
	}
	l := &jwtLab{operator: mk(nkeys.CreateOperator), account: mk(nkeys.CreateAccount),
		system: mk(nkeys.CreateAccount), creds: map[string]string{}}
	l.accountPub, _ = l.account.PublicKey()
	return l
}

// writeJWTConf writes the operator's JWT and returns the server
// configuration's authentication part.
func (s *Server) writeJWTConf() string {
	l := s.jwt
	opPub, _ := l.operator.PublicKey()
	sysPub, _ := l.system.PublicKey()
	oc := jwt.NewOperatorClaims(opPub)
	oc.Name = "natslab"
	oc.SystemAccount = sysPub
	opJWT := s.encode(oc, l.operator)

	sc := jwt.NewAccountClaims(sysPub)
	sc.Name = "SYS"
	sysJWT := s.encode(sc, l.operator)

	ac := jwt.NewAccountClaims(l.accountPub)
	ac.Name = "clearance"
	// JetStream for the account (the always bucket); unlimited within
	// the server's own limits.
	ac.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1}
	accJWT := s.encode(ac, l.operator)

	opFile := filepath.Join(s.dir, "operator.jwt")
	if err := os.WriteFile(opFile, []byte(opJWT), 0o600); err != nil {
		s.tb.Fatal(err)
	}
	return fmt.Sprintf("operator: %q\nsystem_account: %q\nresolver: MEMORY\nresolver_preload: {\n  %s: %q\n  %s: %q\n}\n",
		opFile, sysPub, sysPub, sysJWT, l.accountPub, accJWT)
}

func (s *Server) encode(c jwt.Claims, kp nkeys.KeyPair) string {
	s.tb.Helper()
	tok, err := c.Encode(kp)
	if err != nil {
		s.tb.Fatal(err)
	}
	return tok
}

// UserJWT returns a signed user JWT for u in the lab's account, and the
// user's nkey seed. A zero expires never expires.
func (s *Server) UserJWT(u User, expires time.Time) (token string, seed []byte) {
	s.tb.Helper()
	if s.jwt == nil {
		s.tb.Fatal("natslab: UserJWT needs a server started by StartJWT")
	}
	return s.userJWT(u, expires, s.jwt.account)
}

func (s *Server) userJWT(u User, expires time.Time, account nkeys.KeyPair) (token string, seed []byte) {
	s.tb.Helper()
	ukp, err := nkeys.CreateUser()
	if err != nil {
		s.tb.Fatal(err)
	}
	upub, _ := ukp.PublicKey()
	uc := jwt.NewUserClaims(upub)
	uc.Name = u.Name
	uc.Pub.Allow.Add(u.Publish...)
	uc.Pub.Deny.Add(u.DenyPublish...)
	uc.Sub.Allow.Add(u.Subscribe...)
	if u.Responses {
		// allow_responses: true of the password configuration.
		uc.Resp = &jwt.ResponsePermission{MaxMsgs: 1, Expires: 2 * time.Minute}
	}
	if !expires.IsZero() {
		uc.Expires = expires.Unix()
	}
	seed, _ = ukp.Seed()
	return s.encode(uc, account), seed
}

// WriteCreds writes a credentials file (mode 0600) for u to path, valid
// until expires (zero: for ever), as "nsc generate creds" would.
func (s *Server) WriteCreds(path string, u User, expires time.Time) {
	s.tb.Helper()
	tok, seed := s.UserJWT(u, expires)
	s.writeCredsFile(path, tok, seed)
}

// WriteStrangerCreds writes a well-formed credentials file for u whose
// account the server does not know (as if issued by another operator's
// account): the server refuses it when it connects.
func (s *Server) WriteStrangerCreds(path string, u User) {
	s.tb.Helper()
	acc, err := nkeys.CreateAccount()
	if err != nil {
		s.tb.Fatal(err)
	}
	tok, seed := s.userJWT(u, time.Time{}, acc)
	s.writeCredsFile(path, tok, seed)
}

func (s *Server) writeCredsFile(path, tok string, seed []byte) {
	s.tb.Helper()
	b, err := jwt.FormatUserConfig(tok, seed)
	if err != nil {
		s.tb.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		s.tb.Fatal(err)
	}
}

// Creds is the credentials file of user, written by StartJWT.
func (s *Server) Creds(user string) string {
	s.tb.Helper()
	if s.jwt == nil || s.jwt.creds[user] == "" {
		s.tb.Fatalf("natslab: no credentials for %q (StartJWT writes them for its users)", user)
	}
	return s.jwt.creds[user]
}

func (s *Server) writeAllCreds() {
	for _, u := range s.users {
		p := filepath.Join(s.dir, strings.ReplaceAll(u.Name, "/", "_")+".creds")
		s.WriteCreds(p, u, time.Time{})
		s.jwt.creds[u.Name] = p
	}
}
