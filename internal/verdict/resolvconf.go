package verdict

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// maxResolvConf bounds how much of a container's resolv.conf is read.
const maxResolvConf = 64 << 10

// containerResolvers reads the nameserver lines of /etc/resolv.conf in
// the root of process pid. The file is resolved inside the container's
// root (RESOLVE_IN_ROOT), so a symlink in the container cannot point the
// privileged reader at a host file, and only a regular file is read.
func containerResolvers(pid int) ([]netip.Addr, error) {
	root, err := unix.Open("/proc/"+strconv.Itoa(pid)+"/root", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open root of pid %d: %w", pid, err)
	}
	defer unix.Close(root)
	fd, err := unix.Openat2(root, "etc/resolv.conf", &unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_CLOEXEC | unix.O_NONBLOCK,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV,
	})
	if err != nil {
		return nil, fmt.Errorf("open resolv.conf of pid %d: %w", pid, err)
	}
	f := os.NewFile(uintptr(fd), "resolv.conf")
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, errors.New("resolv.conf is not a regular file")
	}
	b, err := io.ReadAll(io.LimitReader(f, maxResolvConf))
	if err != nil {
		return nil, err
	}
	return parseResolvConf(b), nil
}

// parseResolvConf returns the addresses of the nameserver lines.
func parseResolvConf(b []byte) []netip.Addr {
	var out []netip.Addr
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 || fields[0] != "nameserver" {
			continue
		}
		a, err := netip.ParseAddr(fields[1])
		if err != nil {
			continue
		}
		out = append(out, a.WithZone("").Unmap())
	}
	return out
}
