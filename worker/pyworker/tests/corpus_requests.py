"""The raw-request corpus: RFC 9112 / PEP 3333 cases replayed against a running worker.

VALID cases are ``(name, raw, expected)``: ``expected`` is a dict of fields of the echo
app's JSON (tests/apps/basic.py ``echo``) that must match, or a list of such dicts for
pipelined requests (answered in order). ``headers`` in ``expected`` is checked as a
subset, and ``absent`` lists environ keys that must not exist.

INVALID cases are ``(name, raw, expected)``: ``expected`` is the status of the single
response the server sends before closing, or ``"close"`` when it must close without
answering (an incomplete request at EOF, a timeout).

The GROUP of a case (its worker's settings) is ``default`` unless listed in ROOTED.
"""

from __future__ import annotations

from typing import Any, Union

H = b"Host: example.com\r\n"
C = b"Connection: close\r\n"


def req(line: bytes, *headers: bytes, body: bytes = b"", close: bool = True) -> bytes:
    return line + b"\r\n" + H + (C if close else b"") + b"".join(h + b"\r\n" for h in headers) + b"\r\n" + body


Expected = Union[dict[str, Any], list[dict[str, Any]]]

VALID: list[tuple[str, bytes, Expected]] = [
    # --- request line and targets
    ("get_root", req(b"GET / HTTP/1.1"), {"method": "GET", "path": "/", "query": "", "raw_uri": "/", "protocol": "HTTP/1.1"}),
    ("get_query", req(b"GET /a/b?x=1&y=2 HTTP/1.1"), {"path": "/a/b", "query": "x=1&y=2", "raw_uri": "/a/b?x=1&y=2"}),
    ("empty_query", req(b"GET /a? HTTP/1.1"), {"path": "/a", "query": "", "raw_uri": "/a?"}),
    ("fragment_kept_out", req(b"GET /a?q=1#frag HTTP/1.1"), {"path": "/a", "raw_uri": "/a?q=1#frag"}),
    ("http10", b"GET /ten HTTP/1.0\r\n\r\n", {"protocol": "HTTP/1.0", "path": "/ten"}),
    ("http10_host", b"GET / HTTP/1.0\r\nHost: old.example\r\n\r\n", {"server_name": "old.example"}),
    ("post_body", req(b"POST /p HTTP/1.1", b"Content-Length: 5", body=b"hello"), {"method": "POST", "body": "hello"}),
    ("put", req(b"PUT /x HTTP/1.1", b"Content-Length: 3", body=b"abc"), {"method": "PUT", "body": "abc"}),
    ("delete", req(b"DELETE /x/1 HTTP/1.1"), {"method": "DELETE", "path": "/x/1"}),
    ("patch", req(b"PATCH /x HTTP/1.1", b"Content-Length: 2", body=b"{}"), {"method": "PATCH", "body": "{}"}),
    ("options_star", req(b"OPTIONS * HTTP/1.1"), {"method": "OPTIONS", "raw_uri": "*"}),
    ("custom_method_token", req(b"PROPFIND /dav HTTP/1.1"), {"method": "PROPFIND"}),
    ("method_with_tchars", req(b"M-SEARCH! /x HTTP/1.1"), {"method": "M-SEARCH!"}),
    ("absolute_form", req(b"GET http://other.example/abs/path?z=9 HTTP/1.1"), {"path": "/abs/path", "query": "z=9", "raw_uri": "http://other.example/abs/path?z=9"}),
    ("absolute_form_no_path", req(b"GET http://other.example HTTP/1.1"), {"path": "/"}),
    ("percent_decoded_path", req(b"GET /a%20b/%41 HTTP/1.1"), {"path": "/a b/A", "raw_uri": "/a%20b/%41"}),
    ("percent_utf8_as_latin1", req(b"GET /caf%C3%A9 HTTP/1.1"), {"path": "/caf\u00c3\u00a9"}),
    ("encoded_slash", req(b"GET /a%2Fb HTTP/1.1"), {"path": "/a/b", "raw_uri": "/a%2Fb"}),
    ("query_not_decoded", req(b"GET /q?a=%20b HTTP/1.1"), {"query": "a=%20b"}),
    ("double_slash_path", req(b"GET //twice//x HTTP/1.1"), {"path": "//twice//x"}),
    ("long_line_under_limit", req(b"GET /" + b"a" * 4000 + b" HTTP/1.1"), {"path": "/" + "a" * 4000}),
    # --- headers
    ("header_value_trimmed", req(b"GET / HTTP/1.1", b"X-Trim:    padded \t "), {"headers": {"HTTP_X_TRIM": "padded"}}),
    ("header_empty_value", req(b"GET / HTTP/1.1", b"X-Empty:"), {"headers": {"HTTP_X_EMPTY": ""}}),
    ("header_case_insensitive", req(b"GET / HTTP/1.1", b"x-MiXeD-cAsE: v"), {"headers": {"HTTP_X_MIXED_CASE": "v"}}),
    ("header_repeated_joined", req(b"GET / HTTP/1.1", b"X-Rep: a", b"X-Rep: b"), {"headers": {"HTTP_X_REP": "a,b"}}),
    ("header_underscore_dropped", req(b"GET / HTTP/1.1", b"X_Sneaky: 1", b"X-Fine: 2"), {"headers": {"HTTP_X_FINE": "2"}, "absent": ["HTTP_X_SNEAKY"]}),
    ("header_value_with_colons", req(b"GET / HTTP/1.1", b"X-Time: 12:34:56"), {"headers": {"HTTP_X_TIME": "12:34:56"}}),
    ("header_value_obs_text", req(b"GET / HTTP/1.1", b"X-Latin: caf\xe9"), {"headers": {"HTTP_X_LATIN": "caf\u00e9"}}),
    ("header_value_inner_spaces", req(b"GET / HTTP/1.1", b"X-Sp: a  b\tc"), {"headers": {"HTTP_X_SP": "a  b\tc"}}),
    ("content_type", req(b"POST / HTTP/1.1", b"Content-Type: text/plain", b"Content-Length: 1", body=b"x"), {"headers": {"CONTENT_TYPE": "text/plain", "CONTENT_LENGTH": "1"}}),
    ("no_content_headers", req(b"GET / HTTP/1.1"), {"absent": ["CONTENT_TYPE", "CONTENT_LENGTH"]}),
    ("host_sets_server_name_port", b"GET / HTTP/1.1\r\nHost: svc.local:8080\r\nConnection: close\r\n\r\n", {"server_name": "svc.local", "server_port": "8080"}),
    ("host_ipv6", b"GET / HTTP/1.1\r\nHost: [::1]:9000\r\nConnection: close\r\n\r\n", {"server_name": "::1", "server_port": "9000"}),
    ("host_default_port", b"GET / HTTP/1.1\r\nHost: svc.local\r\nConnection: close\r\n\r\n", {"server_name": "svc.local", "server_port": "80"}),
    ("many_headers_under_limit", req(b"GET / HTTP/1.1", *[b"X-H%d: v" % i for i in range(90)]), {"headers": {"HTTP_X_H89": "v"}}),
    ("long_header_under_limit", req(b"GET / HTTP/1.1", b"X-Big: " + b"v" * 8000), {"headers": {"HTTP_X_BIG": "v" * 8000}}),
    ("leading_empty_line", b"\r\n" + req(b"GET /after-crlf HTTP/1.1"), {"path": "/after-crlf"}),
    # --- bodies
    ("content_length_zero", req(b"POST / HTTP/1.1", b"Content-Length: 0"), {"body": ""}),
    ("content_length_leading_zeros", req(b"POST / HTTP/1.1", b"Content-Length: 007", body=b"1234567"), {"body": "1234567"}),
    ("binary_body", req(b"POST / HTTP/1.1", b"Content-Length: 4", body=b"\x00\xff\r\n"), {"body": "\x00\xff\r\n"}),
    ("chunked", req(b"POST / HTTP/1.1", b"Transfer-Encoding: chunked", body=b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"), {"body": "hello world"}),
    ("chunked_uppercase_hex", req(b"POST / HTTP/1.1", b"Transfer-Encoding: chunked", body=b"A\r\n0123456789\r\n0\r\n\r\n"), {"body": "0123456789"}),
    ("chunked_lowercase_hex", req(b"POST / HTTP/1.1", b"Transfer-Encoding: chunked", body=b"a\r\n0123456789\r\n0\r\n\r\n"), {"body": "0123456789"}),
    ("chunked_leading_zeros", req(b"POST / HTTP/1.1", b"Transfer-Encoding: chunked", body=b"0005\r\nhello\r\n0\r\n\r\n"), {"body": "hello"}),
    ("chunked_extension", req(b"POST / HTTP/1.1", b"Transfer-Encoding: chunked", body=b"5;name=value\r\nhello\r\n0;last\r\n\r\n"), {"body": "hello"}),
    ("chunked_quoted_extension", req(b"POST / HTTP/1.1", b"Transfer-Encoding: chunked", body=b'5;n="a;b"\r\nhello\r\n0\r\n\r\n'), {"body": "hello"}),
    ("chunked_trailer", req(b"POST / HTTP/1.1", b"Transfer-Encoding: chunked", body=b"3\r\nabc\r\n0\r\nX-Checksum: 42\r\n\r\n"), {"body": "abc"}),
    ("chunked_case_insensitive_te", req(b"POST / HTTP/1.1", b"Transfer-Encoding: CHUNKED", body=b"1\r\nx\r\n0\r\n\r\n"), {"body": "x"}),
    ("chunked_empty", req(b"POST / HTTP/1.1", b"Transfer-Encoding: chunked", body=b"0\r\n\r\n"), {"body": ""}),
    ("chunked_binary_crlf_in_data", req(b"POST / HTTP/1.1", b"Transfer-Encoding: chunked", body=b"4\r\n\r\n\r\n\r\n0\r\n\r\n"), {"body": "\r\n\r\n"}),
    ("body_at_limit", req(b"POST / HTTP/1.1", b"Content-Length: 1024", body=b"b" * 1024), {"body": "b" * 1024}),
    # --- keep-alive and pipelining
    ("pipelined_two", req(b"GET /one HTTP/1.1", close=False) + req(b"GET /two HTTP/1.1"), [{"path": "/one"}, {"path": "/two"}]),
    ("pipelined_three", req(b"GET /1 HTTP/1.1", close=False) + req(b"GET /2 HTTP/1.1", close=False) + req(b"GET /3 HTTP/1.1"), [{"path": "/1"}, {"path": "/2"}, {"path": "/3"}]),
    ("pipelined_with_bodies", req(b"POST /a HTTP/1.1", b"Content-Length: 3", body=b"one", close=False) + req(b"POST /b HTTP/1.1", b"Transfer-Encoding: chunked", body=b"3\r\ntwo\r\n0\r\n\r\n"), [{"path": "/a", "body": "one"}, {"path": "/b", "body": "two"}]),
    ("pipelined_http10_keepalive", b"GET /k HTTP/1.0\r\nConnection: keep-alive\r\n\r\n" + req(b"GET /l HTTP/1.1"), [{"path": "/k"}, {"path": "/l"}]),
    ("pipelined_get_with_body", req(b"GET /g HTTP/1.1", b"Content-Length: 2", body=b"zz", close=False) + req(b"GET /h HTTP/1.1"), [{"path": "/g", "body": "zz"}, {"path": "/h"}]),
    # --- proxies (127.0.0.1 is trusted by default)
    ("xff_trusted", req(b"GET / HTTP/1.1", b"X-Forwarded-For: 203.0.113.7, 10.0.0.1"), {"remote_addr": "203.0.113.7"}),
    ("xfp_trusted", req(b"GET / HTTP/1.1", b"X-Forwarded-Proto: https"), {"scheme": "https"}),
    ("forwarded_trusted", req(b"GET / HTTP/1.1", b"Forwarded: for=198.51.100.9;proto=https"), {"remote_addr": "198.51.100.9", "scheme": "https"}),
    ("forwarded_ipv6", req(b"GET / HTTP/1.1", b'Forwarded: for="[2001:db8::1]:4711"'), {"remote_addr": "2001:db8::1"}),
    ("no_proxy_headers", req(b"GET / HTTP/1.1"), {"remote_addr": "127.0.0.1", "scheme": "http"}),
    # --- Expect
    ("expect_100_continue", req(b"POST / HTTP/1.1", b"Expect: 100-continue", b"Content-Length: 2", body=b"ok"), {"body": "ok"}),
    ("expect_case_insensitive", req(b"POST / HTTP/1.1", b"Expect: 100-Continue", b"Content-Length: 2", body=b"ok"), {"body": "ok"}),
    ("expect_ignored_on_http10", b"POST / HTTP/1.0\r\nExpect: something-else\r\nContent-Length: 2\r\n\r\nok", {"body": "ok"}),
    # --- SCRIPT_NAME (group "rooted": root_path=/app, no trusted proxies)
    ("root_path_stripped", req(b"GET /app/users HTTP/1.1"), {"script_name": "/app", "path": "/users"}),
    ("root_path_exact", req(b"GET /app HTTP/1.1"), {"script_name": "/app", "path": ""}),
    ("root_path_outside_prefix", req(b"GET /elsewhere HTTP/1.1"), {"script_name": "", "path": "/elsewhere"}),
    ("root_path_prefix_of_segment", req(b"GET /application HTTP/1.1"), {"script_name": "", "path": "/application"}),
    ("root_path_untrusted_proxy", req(b"GET /app/x HTTP/1.1", b"X-Forwarded-For: 203.0.113.7", b"X-Forwarded-Proto: https"), {"remote_addr": "127.0.0.1", "scheme": "http"}),
]

ROOTED = {name for name, _, _ in VALID if name.startswith("root_path")}

INVALID: list[tuple[str, bytes, Union[int, str]]] = [
    # --- request line
    ("bare_lf_request_line", b"GET / HTTP/1.1\nHost: x\r\n\r\n", 400),
    ("bare_lf_everywhere", b"GET / HTTP/1.1\nHost: x\n\n", 400),
    ("lowercase_version", req(b"GET / http/1.1"), 400),
    ("version_garbage", req(b"GET / HTTP/one"), 400),
    ("version_missing", b"GET /\r\nHost: x\r\n\r\n", 400),
    ("version_http2", req(b"GET / HTTP/2.0"), 505),
    ("version_http12", req(b"GET / HTTP/1.2"), 505),
    ("version_http09", req(b"GET / HTTP/0.9"), 505),
    ("extra_space_in_line", req(b"GET  / HTTP/1.1"), 400),
    ("trailing_space_in_line", req(b"GET / HTTP/1.1 "), 400),
    ("tab_separator", req(b"GET\t/ HTTP/1.1"), 400),
    ("method_with_slash", req(b"GE/T / HTTP/1.1"), 400),
    ("method_with_nul", req(b"GE\x00T / HTTP/1.1"), 400),
    ("empty_method", req(b" / HTTP/1.1"), 400),
    ("target_with_space", req(b"GET /a b HTTP/1.1"), 400),
    ("target_with_nul", req(b"GET /a\x00b HTTP/1.1"), 400),
    ("target_with_ctl", req(b"GET /a\x07b HTTP/1.1"), 400),
    ("star_not_options", req(b"GET * HTTP/1.1"), 400),
    ("authority_not_connect", req(b"GET example.com:443 HTTP/1.1"), 400),
    ("relative_target", req(b"GET foo/bar HTTP/1.1"), 400),
    ("request_line_too_long", req(b"GET /" + b"a" * 5000 + b" HTTP/1.1"), 414),
    ("only_garbage", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40 + b"\r\n\r\n", 400),
    # --- header syntax
    ("space_before_colon", req(b"GET / HTTP/1.1", b"X-Bad : v"), 400),
    ("tab_before_colon", req(b"GET / HTTP/1.1", b"X-Bad\t: v"), 400),
    ("no_colon", req(b"GET / HTTP/1.1", b"NoColonHere"), 400),
    ("empty_name", req(b"GET / HTTP/1.1", b": value"), 400),
    ("name_with_space", req(b"GET / HTTP/1.1", b"X Bad: v"), 400),
    ("name_with_bracket", req(b"GET / HTTP/1.1", b"X[1]: v"), 400),
    ("name_non_ascii", req(b"GET / HTTP/1.1", b"X-\xe9: v"), 400),
    ("obs_fold_space", req(b"GET / HTTP/1.1", b"X-Fold: a", b" continued"), 400),
    ("obs_fold_tab", req(b"GET / HTTP/1.1", b"X-Fold: a", b"\tcontinued"), 400),
    ("first_header_folded", b"GET / HTTP/1.1\r\n Host: x\r\n\r\n", 400),
    ("nul_in_value", req(b"GET / HTTP/1.1", b"X-Nul: a\x00b"), 400),
    ("bare_cr_in_value", req(b"GET / HTTP/1.1", b"X-Cr: a\rb"), 400),
    ("bare_lf_in_header_line", b"GET / HTTP/1.1\r\nHost: x\nX-Injected: 1\r\n\r\n", 400),
    ("ctl_in_value", req(b"GET / HTTP/1.1", b"X-Ctl: a\x1bb"), 400),
    ("del_in_value", req(b"GET / HTTP/1.1", b"X-Del: a\x7fb"), 400),
    ("duplicate_host", req(b"GET / HTTP/1.1", b"Host: other.example"), 400),
    ("too_many_headers", req(b"GET / HTTP/1.1", *[b"X-H%d: v" % i for i in range(120)]), 431),
    ("header_too_large", req(b"GET / HTTP/1.1", b"X-Big: " + b"v" * 9000), 431),
    # --- framing and smuggling: CL.CL
    ("cl_duplicate_equal", req(b"POST / HTTP/1.1", b"Content-Length: 3", b"Content-Length: 3", body=b"abc"), 400),
    ("cl_duplicate_different", req(b"POST / HTTP/1.1", b"Content-Length: 3", b"Content-Length: 4", body=b"abcd"), 400),
    ("cl_list", req(b"POST / HTTP/1.1", b"Content-Length: 3, 3", body=b"abc"), 400),
    ("cl_plus_sign", req(b"POST / HTTP/1.1", b"Content-Length: +3", body=b"abc"), 400),
    ("cl_negative", req(b"POST / HTTP/1.1", b"Content-Length: -1"), 400),
    ("cl_hex", req(b"POST / HTTP/1.1", b"Content-Length: 0x3", body=b"abc"), 400),
    ("cl_inner_space", req(b"POST / HTTP/1.1", b"Content-Length: 1 2", body=b"abc"), 400),
    ("cl_empty", req(b"POST / HTTP/1.1", b"Content-Length:"), 400),
    ("cl_underscore_digits", req(b"POST / HTTP/1.1", b"Content-Length: 1_0", body=b"a" * 10), 400),
    ("cl_unicode_digit", req(b"POST / HTTP/1.1", "Content-Length: \u0663".encode()), 400),
    # --- CL.TE / TE.CL
    ("cl_te", req(b"POST / HTTP/1.1", b"Content-Length: 6", b"Transfer-Encoding: chunked", body=b"0\r\n\r\nX"), 400),
    ("te_cl", req(b"POST / HTTP/1.1", b"Transfer-Encoding: chunked", b"Content-Length: 3", body=b"3\r\nabc\r\n0\r\n\r\n"), 400),
    # --- TE.TE (obfuscated Transfer-Encoding)
    ("te_xchunked", req(b"POST / HTTP/1.1", b"Transfer-Encoding: xchunked", body=b"0\r\n\r\n"), 501),
    # chunked not last: the length cannot be determined, RFC 9112 6.3 says 400
    ("te_chunked_then_identity", req(b"POST / HTTP/1.1", b"Transfer-Encoding: chunked, identity", body=b"0\r\n\r\n"), 400),
    ("te_unknown_coding", req(b"POST / HTTP/1.1", b"Transfer-Encoding: foo, chunked", body=b"0\r\n\r\n"), 501),
    ("te_gzip_only", req(b"POST / HTTP/1.1", b"Transfer-Encoding: gzip", body=b"abc"), 501),
    ("te_chunked_twice", req(b"POST / HTTP/1.1", b"Transfer-Encoding: chunked, chunked", body=b"0\r\n\r\n"), 400),
    ("te_duplicate_headers", req(b"POST / HTTP/1.1", b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked", body=b"0\r\n\r\n"), 400),
    ("te_space_before_colon", req(b"POST / HTTP/1.1", b"Transfer-Encoding : chunked", body=b"0\r\n\r\n"), 400),
    ("te_quoted", req(b"POST / HTTP/1.1", b'Transfer-Encoding: "chunked"', body=b"0\r\n\r\n"), 400),
    ("te_on_http10", b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("te_vertical_tab", req(b"POST / HTTP/1.1", b"Transfer-Encoding:\x0bchunked", body=b"0\r\n\r\n"), 400),
    # --- chunk syntax
    ("chunk_size_overflow", req(b"POST / HTTP/1.1", b"Transfer-Encoding: chunked", body=b"1" + b"0" * 16 + b"\r\nx\r\n0\r\n\r\n"), 400),
    ("chunk_size_negative", req(b"POST / HTTP/1.1", b"Transfer-Encoding: chunked", body=b"-1\r\nx\r\n0\r\n\r\n"), 400),
    ("chunk_size_0x_prefix", req(b"POST / HTTP/1.1", b"Transfer-Encoding: chunked", body=b"0x5\r\nhello\r\n0\r\n\r\n"), 400),
    ("chunk_size_empty", req(b"POST / HTTP/1.1", b"Transfer-Encoding: chunked", body=b"\r\nhello\r\n0\r\n\r\n"), 400),
    ("chunk_size_space", req(b"POST / HTTP/1.1", b"Transfer-Encoding: chunked", body=b"5 \r\nhello\r\n0\r\n\r\n"), 400),
    ("chunk_size_non_hex", req(b"POST / HTTP/1.1", b"Transfer-Encoding: chunked", body=b"g\r\nhello\r\n0\r\n\r\n"), 400),
    ("chunk_missing_crlf", req(b"POST / HTTP/1.1", b"Transfer-Encoding: chunked", body=b"5\r\nhelloX0\r\n\r\n"), 400),
    ("chunk_bare_lf", req(b"POST / HTTP/1.1", b"Transfer-Encoding: chunked", body=b"5\nhello\n0\n\n"), 400),
    ("chunk_extension_bare_cr", req(b"POST / HTTP/1.1", b"Transfer-Encoding: chunked", body=b"5;a\rb\r\nhello\r\n0\r\n\r\n"), 400),
    ("chunk_trailer_forbidden", req(b"POST / HTTP/1.1", b"Transfer-Encoding: chunked", body=b"0\r\nContent-Length: 5\r\n\r\n"), 400),
    ("chunk_trailer_bad_syntax", req(b"POST / HTTP/1.1", b"Transfer-Encoding: chunked", body=b"0\r\nBad Trailer: x\r\n\r\n"), 400),
    # --- limits and expectations
    ("body_over_limit_cl", req(b"POST / HTTP/1.1", b"Content-Length: 1025", body=b"b" * 1025), 413),
    ("body_over_limit_chunked", req(b"POST / HTTP/1.1", b"Transfer-Encoding: chunked", body=b"401\r\n" + b"b" * 1025 + b"\r\n0\r\n\r\n"), 413),
    ("expect_unknown", req(b"POST / HTTP/1.1", b"Expect: 200-ok", b"Content-Length: 2", body=b"ok"), 417),
    # --- incomplete input: close without a response
    ("eof_in_request_line", b"GET / HT", "close"),
    ("eof_in_headers", b"GET / HTTP/1.1\r\nHost: x\r\n", "close"),
]
