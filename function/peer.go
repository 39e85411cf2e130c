package function

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// The runtime API listens on loopback, where any local process can
// connect. Besides the secret in its address, each connection is checked
// once, at its first request: the client end's socket must be held by a
// process of the instance. The socket is looked up by its address through
// sock_diag (netlink; /proc/net/tcp where that fails: reading it costs
// time in proportion to the kernel's hash table, ~0.4 ms here), which
// gives its owner's uid and inode, and the inode is looked for among the
// descriptors of the instance's processes: those in its cgroups, else
// those in its process group.

// errForeignPeer refuses a connection that is not the instance's.
var errForeignPeer = errors.New("the connection does not come from the instance's processes")

// peerCheckAvailable reports whether this host can tell who holds a
// loopback connection's client end.
func peerCheckAvailable() bool {
	if fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG); err == nil {
		unix.Close(fd)
		return true
	}
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		return false
	}
	f.Close()
	return true
}

// checkPeer reports whether the client end of the loopback TCP connection
// c is held by one of pids, which run as uid.
func checkPeer(c net.Conn, uid int, pids []int) error {
	client, ok1 := c.RemoteAddr().(*net.TCPAddr)
	server, ok2 := c.LocalAddr().(*net.TCPAddr)
	if !ok1 || !ok2 || client.IP.To4() == nil || server.IP.To4() == nil {
		return fmt.Errorf("%w: not an IPv4 TCP connection (%v)", errForeignPeer, c.RemoteAddr())
	}
	sockUID, inode, err := diagSocket(client, server)
	if err != nil && !errors.Is(err, errForeignPeer) {
		sockUID, inode, err = tcpSocket(client, server)
	}
	if err != nil {
		return err
	}
	if sockUID != uid {
		return fmt.Errorf("%w: %v belongs to uid %d, the instance runs as %d", errForeignPeer, client, sockUID, uid)
	}
	target := "socket:[" + strconv.FormatUint(inode, 10) + "]"
	for _, pid := range pids {
		dir := "/proc/" + strconv.Itoa(pid) + "/fd/"
		entries, err := os.ReadDir(dir)
		if err != nil {
			continue // exited meanwhile
		}
		for _, e := range entries {
			if l, err := os.Readlink(dir + e.Name()); err == nil && l == target {
				return nil
			}
		}
	}
	return fmt.Errorf("%w: no process of the instance holds %v (socket inode %d)", errForeignPeer, client, inode)
}

// diagSocket asks the kernel (sock_diag, NETLINK_SOCK_DIAG) for the TCP
// socket whose local address is local and remote address remote, and
// returns its owner's uid and inode.
func diagSocket(local, remote *net.TCPAddr) (uid int, inode uint64, err error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return 0, 0, fmt.Errorf("sock_diag: %w", err)
	}
	defer unix.Close(fd)
	// struct nlmsghdr, then struct inet_diag_req_v2 (linux/inet_diag.h).
	const hdrLen, reqLen = 16, 56
	var msg [hdrLen + reqLen]byte
	ne := binary.NativeEndian // netlink headers are in host order
	ne.PutUint32(msg[0:], uint32(len(msg)))
	ne.PutUint16(msg[4:], unix.SOCK_DIAG_BY_FAMILY)
	ne.PutUint16(msg[6:], unix.NLM_F_REQUEST)
	req := msg[hdrLen:]
	req[0], req[1] = unix.AF_INET, unix.IPPROTO_TCP
	ne.PutUint32(req[4:], 0xffffffff) // every state
	id := req[8:]                     // struct inet_diag_sockid
	binary.BigEndian.PutUint16(id[0:], uint16(local.Port))
	binary.BigEndian.PutUint16(id[2:], uint16(remote.Port))
	copy(id[4:8], local.IP.To4())
	copy(id[20:24], remote.IP.To4())
	ne.PutUint32(id[40:], 0xffffffff) // INET_DIAG_NOCOOKIE: find by address
	ne.PutUint32(id[44:], 0xffffffff)
	if err := unix.Sendto(fd, msg[:], 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return 0, 0, fmt.Errorf("sock_diag: %w", err)
	}
	var buf [1024]byte
	n, _, err := unix.Recvfrom(fd, buf[:], 0)
	if err != nil {
		return 0, 0, fmt.Errorf("sock_diag: %w", err)
	}
	if n < hdrLen {
		return 0, 0, errors.New("sock_diag: short answer")
	}
	switch ne.Uint16(buf[4:]) {
	case unix.NLMSG_ERROR:
		if n >= hdrLen+4 {
			if errno := -int32(ne.Uint32(buf[hdrLen:])); errno == int32(unix.ENOENT) {
				return 0, 0, fmt.Errorf("%w: no socket has the address %v", errForeignPeer, local)
			} else if errno != 0 {
				return 0, 0, fmt.Errorf("sock_diag: %w", unix.Errno(errno))
			}
		}
		return 0, 0, errors.New("sock_diag: error answer")
	case unix.SOCK_DIAG_BY_FAMILY:
		// struct inet_diag_msg: ... idiag_uid at 64, idiag_inode at 68.
		if n < hdrLen+72 {
			return 0, 0, errors.New("sock_diag: short answer")
		}
		m := buf[hdrLen:]
		return int(ne.Uint32(m[64:])), uint64(ne.Uint32(m[68:])), nil
	}
	return 0, 0, fmt.Errorf("sock_diag: answer of type %d", ne.Uint16(buf[4:]))
}

// tcpSocket finds the socket whose local address is local and remote
// address remote in /proc/net/tcp, and returns its owner's uid and inode.
func tcpSocket(local, remote *net.TCPAddr) (uid int, inode uint64, err error) {
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	want := []byte(procAddr(local) + " " + procAddr(remote))
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
		line := bytes.TrimSpace(sc.Bytes())
		_, rest, ok := bytes.Cut(line, []byte(": "))
		if !ok || !bytes.HasPrefix(rest, want) {
			continue
		}
		fields := strings.Fields(string(rest))
		if len(fields) < 9 {
			break
		}
		uid, err1 := strconv.Atoi(fields[6])
		inode, err2 := strconv.ParseUint(fields[8], 10, 64)
		if err1 != nil || err2 != nil {
			break
		}
		return uid, inode, nil
	}
	if err := sc.Err(); err != nil {
		return 0, 0, err
	}
	return 0, 0, fmt.Errorf("%w: %v is not in /proc/net/tcp", errForeignPeer, local)
}

// procAddr writes an IPv4 address as /proc/net/tcp does: the address as a
// little-endian word, the port big-endian, in upper-case hex.
func procAddr(a *net.TCPAddr) string {
	ip := a.IP.To4()
	return fmt.Sprintf("%02X%02X%02X%02X:%04X", ip[3], ip[2], ip[1], ip[0], a.Port)
}

// groupMembers lists the processes in process group pgid.
func groupMembers(pgid int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp ...
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) > 2 && f[2] == strconv.Itoa(pgid) {
			pids = append(pids, pid)
		}
	}
	return pids
}
