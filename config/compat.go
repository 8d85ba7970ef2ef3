package config

import (
	"flag"
	"fmt"
	"os"
	"os/user"
	"strconv"
	"strings"
	"syscall"
)

// unimplemented is a gunicorn setting gorn does not implement: its config-file name, its
// command-line flags, and what happens when it is set. A refused one would change what is
// served (TLS, the PROXY protocol, a Paste app) or how gorn runs (detached): gorn will not
// start with it. The others are ignored with one warning that says what gorn does instead,
// so a gunicorn command line or config file keeps working.
type unimplemented struct {
	setting string
	flags   []string
	isBool  bool // the flags take no value
	refuse  bool
	why     string
}

const (
	whyTLS     = "TLS is not supported: terminate TLS in front of gorn (ingress, load balancer, sidecar)"
	whyLogs    = "gorn logs to files or stderr: see --log-format and --error-logfile"
	whyStrict  = "gorn's request parser stays strict (RFC 9112)"
	whyH1      = "gorn speaks HTTP/1.1 (put an HTTP/2 proxy in front)"
	whyASGI    = "gorn serves WSGI apps; ASGI is not supported yet"
	whyControl = "gorn has no control socket: use signals, /metrics and /healthz"
	whyDirty   = "gorn has no dirty-worker pool"
)

// unimplementedSettings is the compat table: gunicorn's settings that gorn does not
// implement, with what it does instead.
func unimplementedSettings() []unimplemented {
	return []unimplemented{
		{"worker_tmp_dir", []string{"worker-tmp-dir"}, false, false, "the heartbeat is in shared memory, not in a file"},
		{"sendfile", []string{"no-sendfile"}, true, false, "file responses always use sendfile(2)"},
		{"capture_output", []string{"capture-output"}, true, false, "workers' stdout and stderr already go to gorn's"},
		{"enable_stdio_inheritance", []string{"R", "enable-stdio-inheritance"}, true, false, "workers inherit gorn's stdio already"},
		{"spew", []string{"spew"}, true, false, "there is no tracing mode"},
		{"tmp_upload_dir", nil, false, false, "gunicorn does not use it either"},
		{"logger_class", []string{"logger-class"}, false, false, whyLogs},
		{"syslog", []string{"log-syslog"}, true, false, whyLogs},
		{"syslog_addr", []string{"log-syslog-to"}, false, false, whyLogs},
		{"syslog_prefix", []string{"log-syslog-prefix"}, false, false, whyLogs},
		{"syslog_facility", []string{"log-syslog-facility"}, false, false, whyLogs},
		{"disable_redirect_access_to_syslog", []string{"disable-redirect-access-to-syslog"}, true, false, whyLogs},
		{"permit_obsolete_folding", []string{"permit-obsolete-folding"}, true, false, whyStrict},
		{"strip_header_spaces", []string{"strip-header-spaces"}, true, false, whyStrict},
		{"permit_unconventional_http_method", []string{"permit-unconventional-http-method"}, true, false, whyStrict},
		{"permit_unconventional_http_version", []string{"permit-unconventional-http-version"}, true, false, whyStrict},
		{"casefold_http_method", []string{"casefold-http-method"}, true, false, whyStrict},
		{"header_map", []string{"header-map"}, false, false, "header names with '_' are always dropped (gunicorn's default, drop)"},
		{"forwarder_headers", []string{"forwarder-headers"}, false, false, "headers with an underscore are always dropped; --forwarded-real-ip reads X-Forwarded-For"},
		{"http_parser", []string{"http-parser"}, false, false, "gorn has one parser"},
		{"ssl_version", []string{"ssl-version"}, false, false, "gunicorn ignores it too"},
		{"do_handshake_on_connect", []string{"do-handshake-on-connect"}, true, false, whyTLS},
		{"suppress_ragged_eofs", []string{"suppress-ragged-eofs"}, true, false, whyTLS},
		{"raw_paste_global_conf", []string{"paste-global"}, false, false, "PasteDeploy is not supported"},
		{"keyfile", []string{"keyfile"}, false, true, whyTLS},
		{"certfile", []string{"certfile"}, false, true, whyTLS},
		{"ca_certs", []string{"ca-certs"}, false, true, whyTLS},
		{"cert_reqs", []string{"cert-reqs"}, false, true, whyTLS},
		{"ciphers", []string{"ciphers"}, false, true, whyTLS},
		{"proxy_protocol", []string{"proxy-protocol"}, true, true, "the PROXY protocol is not supported: use X-Forwarded-For with --forwarded-allow-ips"},
		{"proxy_allow_ips", []string{"proxy-allow-from"}, false, false, "the PROXY protocol is not supported"},
		{"paste", []string{"paste", "paster"}, false, true, "PasteDeploy apps are not supported: name the WSGI app as MODULE:VARIABLE"},
		{"daemon", []string{"D", "daemon"}, true, true, "gorn stays in the foreground: run it under systemd, a container runtime or another process manager"},
		{"protocol", []string{"protocol"}, false, true, "gorn speaks HTTP only"},
		{"uwsgi_allow_ips", []string{"uwsgi-allow-from"}, false, false, "gorn speaks HTTP only"},
		{"http_protocols", []string{"http-protocols"}, false, false, whyH1},
		{"http2_cleartext", []string{"http2-cleartext"}, true, false, whyH1},
		{"http2_initial_window_size", []string{"http2-initial-window-size"}, false, false, whyH1},
		{"http2_max_concurrent_streams", []string{"http2-max-concurrent-streams"}, false, false, whyH1},
		{"http2_max_frame_size", []string{"http2-max-frame-size"}, false, false, whyH1},
		{"http2_max_header_list_size", []string{"http2-max-header-list-size"}, false, false, whyH1},
		{"websocket_max_message_size", []string{"websocket-max-message-size"}, false, false, "it sizes gunicorn's ASGI WebSockets; a WSGI app's WebSocket library sets its own limit"},
		{"asgi_loop", []string{"asgi-loop"}, false, false, whyASGI},
		{"asgi_lifespan", []string{"asgi-lifespan"}, false, false, whyASGI},
		{"asgi_disconnect_grace_period", []string{"asgi-disconnect-grace-period"}, false, false, whyASGI},
		{"control_socket", []string{"control-socket"}, false, false, whyControl},
		{"control_socket_mode", []string{"control-socket-mode"}, false, false, whyControl},
		{"control_socket_disable", []string{"no-control-socket"}, true, false, whyControl},
		{"dirty_apps", []string{"dirty-app"}, false, false, whyDirty},
		{"dirty_workers", []string{"dirty-workers"}, false, false, whyDirty},
		{"dirty_threads", []string{"dirty-threads"}, false, false, whyDirty},
		{"dirty_timeout", []string{"dirty-timeout"}, false, false, whyDirty},
		{"dirty_graceful_timeout", []string{"dirty-graceful-timeout"}, false, false, whyDirty},
	}
}

// unimplementedFlag records that a gunicorn-only flag was given; the value is not used.
type unimplementedFlag struct {
	given *[]unimplemented
	u     unimplemented
}

func (f unimplementedFlag) String() string   { return "" }
func (f unimplementedFlag) IsBoolFlag() bool { return f.u.isBool }
func (f unimplementedFlag) Set(string) error {
	*f.given = append(*f.given, f.u)
	return nil
}

var _ flag.Value = unimplementedFlag{}

// setsUnimplemented reports whether a config file's value (JSON) asks for the feature: a
// false flag, an empty value, or sendfile = True (the default) asks for nothing.
func setsUnimplemented(u unimplemented, raw string) bool {
	switch raw {
	case `""`, "[]", "0":
		return false
	case "true", "false":
		return (raw == "true") != (u.setting == "sendfile")
	}
	return true
}

// flagNames spells the setting's flags as --help spells gorn's own: "-D/--daemon".
func (u unimplemented) flagNames() string {
	names := make([]string, len(u.flags))
	for i, f := range u.flags {
		names[i] = "--" + f
		if len(f) == 1 {
			names[i] = "-" + f
		}
	}
	return strings.Join(names, "/")
}

// unimplementedSetting returns the gunicorn-only setting with that config-file name.
func unimplementedSetting(name string) (unimplemented, bool) {
	for _, u := range unimplementedSettings() {
		if u.setting == name {
			return u, true
		}
	}
	return unimplemented{}, false
}

// applyUnimplemented turns the gunicorn-only settings that were given into warnings, or a
// usage error for a refused one. where names the source ("config file x.py: " or "").
func applyUnimplemented(given []unimplemented, where string, warnings *[]string) error {
	seen := map[string]bool{}
	for _, u := range given {
		if seen[u.setting] {
			continue
		}
		seen[u.setting] = true
		name := u.setting
		if where == "" && len(u.flags) > 0 {
			name = u.flagNames()
		}
		if u.refuse {
			return usagef("%s%s: %s", where, name, u.why)
		}
		*warnings = append(*warnings, fmt.Sprintf("%s%s is a gunicorn setting gorn does not implement; ignored: %s", where, name, strings.TrimSuffix(u.why, ".")))
	}
	return nil
}

// MasterHooks are gunicorn's server hooks that run in its Python master; gorn runs them in
// the hook host (gorn_worker/hookhost.py), which is started only for a config file that
// defines one.
func MasterHooks() []string {
	return []string{
		"on_starting", "on_reload", "when_ready", "pre_fork", "pre_exec",
		"child_exit", "nworkers_changed", "on_exit",
	}
}

// UnsupportedHooks are gunicorn's server hooks gorn cannot run: TLS is not terminated by
// gorn, and it has no dirty-worker pool.
func UnsupportedHooks() []string {
	return []string{"ssl_context", "on_dirty_starting", "dirty_post_fork", "dirty_worker_init", "dirty_worker_exit"}
}

// WorkerHooks are gunicorn's server hooks that gorn's workers run (gorn_worker/conffile.py).
func WorkerHooks() []string {
	return []string{"post_fork", "post_worker_init", "pre_request", "post_request", "worker_int", "worker_abort", "worker_exit"}
}

// credential resolves --user, --group (names or numbers) and --initgroups into the
// workers' credentials, as gunicorn's: the group defaults to gorn's own, not the user's.
func credential(userName, groupName string, initGroups bool) (*syscall.Credential, error) {
	if userName == "" && groupName == "" {
		if initGroups {
			return nil, usagef("--initgroups needs -u/--user")
		}
		return nil, nil
	}
	cred := &syscall.Credential{Uid: uint32(os.Geteuid()), Gid: uint32(os.Getegid()), NoSetGroups: true}
	var u *user.User
	if userName != "" {
		var err error
		if u, err = lookupUser(userName); err != nil {
			return nil, usagef("-u/--user %q: %v", userName, err)
		}
		uid, _ := strconv.ParseUint(u.Uid, 10, 32)
		cred.Uid = uint32(uid)
	}
	if groupName != "" {
		gid, err := lookupGroup(groupName)
		if err != nil {
			return nil, usagef("-g/--group %q: %v", groupName, err)
		}
		cred.Gid = gid
	}
	if initGroups {
		ids, err := u.GroupIds()
		if err != nil {
			return nil, usagef("--initgroups: the groups of %s: %v", userName, err)
		}
		for _, id := range ids {
			if gid, err := strconv.ParseUint(id, 10, 32); err == nil {
				cred.Groups = append(cred.Groups, uint32(gid))
			}
		}
		cred.NoSetGroups = false
	}
	if os.Geteuid() != 0 && (cred.Uid != uint32(os.Geteuid()) || cred.Gid != uint32(os.Getegid()) || initGroups) {
		return nil, usagef("-u/--user and -g/--group need gorn to run as root")
	}
	return cred, nil
}

func lookupUser(name string) (*user.User, error) {
	if _, err := strconv.ParseUint(name, 10, 32); err == nil {
		if u, err := user.LookupId(name); err == nil {
			return u, nil
		}
		return &user.User{Uid: name, Username: name}, nil // a uid without a passwd entry
	}
	return user.Lookup(name)
}

func lookupGroup(name string) (uint32, error) {
	if gid, err := strconv.ParseUint(name, 10, 32); err == nil {
		return uint32(gid), nil
	}
	g, err := user.LookupGroup(name)
	if err != nil {
		return 0, err
	}
	gid, err := strconv.ParseUint(g.Gid, 10, 32)
	return uint32(gid), err
}
