// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/net/dns/dnsmessage"
	"golang.org/x/sys/unix"

	"github.com/terok-ai/clearance/internal/netns"
	"github.com/terok-ai/clearance/internal/nft"
	"github.com/terok-ai/clearance/internal/testenv/lab"
)

func init() {
	measurements = append(measurements,
		struct {
			group string
			run   func(*bench) error
		}{"dns", (*bench).dns},
	)
}

// dns: the container's DNS forwarder in a lab namespace, with the real
// verdict service learning addresses into the kernel.
//
//   - dns_direct: the query straight to the resolver, from the container's
//     namespace on a socket carrying the forwarder's mark (not redirected):
//     what the container would see without clearance.
//   - dns_forward: the same query through the forwarder, for a name whose
//     address the firewall already has (nothing to learn): after the
//     first, each is answered from the forwarder's cache.
//   - dns_forward_miss: a query through the forwarder for a name never
//     asked before (m<i>.fixed.test, the same address, so nothing to
//     learn either): each goes to the resolver. A cache miss.
//   - dns_new_address: every answer a new address of an allowed name, so
//     each is held until the verdict service's netlink batch is
//     acknowledged.
//   - name_allow_first_connect_refusals: of 1 000 connects made the moment
//     the answer arrived, each to a new address, how many were refused.
//   - dns_forwarder_rss: the hub's VmRSS before and after 10 000 distinct
//     names were resolved (each remembered for naming prompts).
func (b *bench) dns() error {
	if os.Geteuid() != 0 {
		return errors.New("needs root")
	}
	ctx := context.Background()
	l := lab.New()
	defer l.Close()
	rot := &lab.Rotor{Zone: "rot.test"}
	s, err := l.NewStack(ctx, lab.StackOptions{Bin: b.bin, DNS: func(name string, qtype dnsmessage.Type) ([]netip.Addr, uint32, bool) {
		if name == "fixed.test" || strings.HasSuffix(name, ".fixed.test") {
			if qtype == dnsmessage.TypeA {
				return []netip.Addr{lab.HostAddr}, 300, true
			}
			return nil, 300, true
		}
		return rot.Answer(name, qtype)
	}, ExtraConfig: "dns:\n  queries_per_second: 100000\n", PolicyYAML: "allow:\n  - fixed.test\n  - '*.fixed.test'\n  - rot.test:8082/tcp\n  - '*.many.rot.test:8082/tcp'\n"})
	if err != nil {
		return err
	}
	resolver := netip.AddrPortFrom(lab.HostAddr, 53)
	time.Sleep(500 * time.Millisecond)
	report("hub_with_forwarder_idle_rss_mib", rssMiB(s.HubPID()), "MiB")

	// One long-lived socket per path, opened in the container's namespace.
	open := func(mark int) (net.Conn, error) {
		var c net.Conn
		err := netns.Do(int(s.Container.File.Fd()), func() error {
			d := net.Dialer{}
			if mark != 0 {
				d.Control = func(_, _ string, rc syscall.RawConn) error {
					var serr error
					if err := rc.Control(func(fd uintptr) {
						serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, mark)
					}); err != nil {
						return err
					}
					return serr
				}
			}
			var err error
			c, err = d.Dial("udp", resolver.String())
			return err
		})
		return c, err
	}
	direct, err := open(nft.DefaultDNSMark)
	if err != nil {
		return err
	}
	defer direct.Close()
	viaFwd, err := open(0)
	if err != nil {
		return err
	}
	defer viaFwd.Close()

	// measure asks name n times on c; a name ending in "#" gets a fresh
	// label each time instead (m<i>.fixed.test: never asked before).
	miss := 0
	measure := func(c net.Conn, name string, n int) ([]time.Duration, error) {
		var ds []time.Duration
		for i := 0; i < n; i++ {
			c.SetDeadline(time.Now().Add(5 * time.Second))
			q := name
			if rest, ok := strings.CutPrefix(name, "#"); ok {
				miss++
				q = "m" + strconv.Itoa(miss) + rest
			}
			t0 := time.Now()
			addrs, rcode, err := lab.Exchange(c, "udp", q, dnsmessage.TypeA)
			if err != nil || len(addrs) == 0 {
				return nil, fmt.Errorf("query %s: %v %v %v", name, addrs, rcode, err)
			}
			ds = append(ds, time.Since(t0))
		}
		return ds, nil
	}
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

	// Warm up: the first forwarded answer for fixed.test learns its address.
	if _, err := measure(viaFwd, "fixed.test", 20); err != nil {
		return err
	}
	d, err := measure(direct, "fixed.test", 2000)
	if err != nil {
		return err
	}
	report("dns_direct_p50_us", us(percentile(d, 50)), "µs")
	report("dns_direct_p99_us", us(percentile(d, 99)), "µs")
	cpu0 := cpuTime(s.HubPID())
	f, err := measure(viaFwd, "fixed.test", 2000)
	if err != nil {
		return err
	}
	report("dns_forward_hub_cpu_us_per_query", us((cpuTime(s.HubPID())-cpu0)/2000), "µs")
	report("dns_forward_p50_us", us(percentile(f, 50)), "µs")
	report("dns_forward_p99_us", us(percentile(f, 99)), "µs")
	report("dns_forward_added_p50_us", us(percentile(f, 50)-percentile(d, 50)), "µs")
	cpu0 = cpuTime(s.HubPID())
	fm, err := measure(viaFwd, "#.fixed.test", 2000)
	if err != nil {
		return err
	}
	report("dns_forward_miss_hub_cpu_us_per_query", us((cpuTime(s.HubPID())-cpu0)/2000), "µs")
	report("dns_forward_miss_p50_us", us(percentile(fm, 50)), "µs")
	report("dns_forward_miss_p99_us", us(percentile(fm, 99)), "µs")
	report("dns_forward_miss_added_p50_us", us(percentile(fm, 50)-percentile(d, 50)), "µs")

	na, err := measure(viaFwd, "rot.test", 1000)
	if err != nil {
		return err
	}
	report("dns_new_address_p50_us", us(percentile(na, 50)), "µs")
	report("dns_new_address_p99_us", us(percentile(na, 99)), "µs")
	report("dns_new_address_added_p99_us", us(percentile(na, 99)-percentile(d, 99)), "µs")

	// Race: resolve and connect at once, on one thread of the namespace.
	refused := 0
	err = netns.Do(int(s.Container.File.Fd()), func() error {
		c, err := net.Dial("udp", resolver.String())
		if err != nil {
			return err
		}
		defer c.Close()
		for i := 0; i < 1000; i++ {
			c.SetDeadline(time.Now().Add(5 * time.Second))
			addrs, _, err := lab.Exchange(c, "udp", "rot.test", dnsmessage.TypeA)
			if err != nil || len(addrs) != 1 {
				return fmt.Errorf("resolve: %v %v", addrs, err)
			}
			conn, err := net.DialTimeout("tcp4", netip.AddrPortFrom(addrs[0], lab.RangePort).String(), time.Second)
			if err != nil {
				refused++
				continue
			}
			conn.Close()
		}
		return nil
	})
	if err != nil {
		return err
	}
	report("name_allow_first_connect_refusals", float64(refused), "of 1000")

	// Memory: 10 000 distinct names, each answered with a new address.
	before := rssMiB(s.HubPID())
	for i := 0; i < 10000; i++ {
		viaFwd.SetDeadline(time.Now().Add(5 * time.Second))
		if _, _, err := lab.Exchange(viaFwd, "udp", "n"+strconv.Itoa(i)+".many.rot.test", dnsmessage.TypeA); err != nil {
			return fmt.Errorf("name %d: %w", i, err)
		}
	}
	after := rssMiB(s.HubPID())
	report("dns_forwarder_rss_before_mib", before, "MiB")
	report("dns_forwarder_rss_10k_names_mib", after, "MiB")
	return nil
}

// cpuTime is the user+system CPU time a process used so far.
func cpuTime(pid int) time.Duration {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	st := string(b)
	i := strings.LastIndexByte(st, ')')
	f := strings.Fields(st[i+1:])
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	stt, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+stt) * 10 * time.Millisecond // USER_HZ 100
}
