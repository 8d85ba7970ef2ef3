package main

import (
	"net"
	"strings"
)

// sdNotify sends a state line to systemd's notify socket when $NOTIFY_SOCKET is set
// (Type=notify units); it is a no-op otherwise.
func sdNotify(getenv func(string) string, state string) error {
	path := getenv("NOTIFY_SOCKET")
	if path == "" {
		return nil
	}
	if strings.HasPrefix(path, "@") {
		path = "\x00" + path[1:]
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.Write([]byte(state))
	return err
}
