/* gorn_native: the native twin of the worker's request-head parser.
 *
 * parse_head(head, limits, base, root_path) behaves exactly as parse_head_py in
 * gorn_worker/http.py, which is its specification: the same environ (same keys, values and
 * insertion order), the same HTTPError status and detail, in the same order of checks. It
 * does no I/O and never blocks, so every worker class (gevent and eventlet too) can use it.
 *
 * header_block(headers, code) returns what wsgi.header_block_py returns for the headers an
 * app passed to start_response. It handles the well-formed case; anything it would refuse it
 * hands to header_block_py, which raises the error (so the errors are the twin's own).
 *
 * Limited API (abi3): one build serves CPython 3.10 and later on a platform.
 * Every read of the head is bounded by its length; the head is never written.
 */
#define Py_LIMITED_API 0x030A0000
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

typedef unsigned char uchar;

/* Set by setup(): http.HTTPError, http.EMPTY_BODY and wsgi.header_block_py. */
static PyObject *http_error;
static PyObject *empty_body;
static PyObject *header_block_py;

/* Interned environ keys and values. */
static PyObject *k_request_method, *k_raw_uri, *k_server_protocol, *k_query_string, *k_script_name,
    *k_path_info, *k_wsgi_input, *k_http_host, *k_content_length, *k_content_type, *k_http_transfer_encoding, *k_http_expect,
    *k_http_connection, *v_http11, *v_http10, *v_empty;

#define N_METHODS 9
static const char *const method_names[N_METHODS] = {"GET",     "HEAD",    "POST",   "PUT",  "DELETE",
                                                     "PATCH", "OPTIONS", "CONNECT", "TRACE"};
static PyObject *methods[N_METHODS];
enum { M_OPTIONS = 6, M_CONNECT = 7 };

/* ------------------------------------------------------------------ character classes */

/* RFC 9110 tchar */
static int is_tchar(uchar c) {
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
        return 1;
    return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static int is_hex(uchar c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static int hex_value(uchar c) {
    if (c <= '9')
        return c - '0';
    return (c | 0x20) - 'a' + 10;
}

/* RFC 3986 unreserved / sub-delims (a reg-name's single characters) */
static int is_reg_char(uchar c) {
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
        return 1;
    return c != 0 && strchr("-._~!$&'()*+,;=", c) != NULL;
}

static int is_digit(uchar c) { return c >= '0' && c <= '9'; }

static int is_ows(uchar c) { return c == ' ' || c == '\t'; }

static uchar lower(uchar c) { return (c >= 'A' && c <= 'Z') ? (uchar)(c | 0x20) : c; }

static Py_ssize_t find_byte(const uchar *s, Py_ssize_t n, uchar c) {
    const uchar *p = n > 0 ? memchr(s, c, (size_t)n) : NULL;
    return p ? (Py_ssize_t)(p - s) : -1;
}

/* s[0:n] without leading and trailing SP/HTAB: sets *start, returns the length. */
static Py_ssize_t strip_ows(const uchar *s, Py_ssize_t n, Py_ssize_t *start) {
    Py_ssize_t a = 0;
    while (a < n && is_ows(s[a]))
        a++;
    while (n > a && is_ows(s[n - 1]))
        n--;
    *start = a;
    return n - a;
}

/* Does s[0:n], ASCII-lowercased, equal the lowercase literal lit? */
static int lower_equals(const uchar *s, Py_ssize_t n, const char *lit) {
    if ((size_t)n != strlen(lit))
        return 0;
    for (Py_ssize_t i = 0; i < n; i++)
        if (lower(s[i]) != (uchar)lit[i])
            return 0;
    return 1;
}

/* ------------------------------------------------------------------ hosts (RFC 3986) */

/* Length of an IP-literal "[" 1*(HEXDIG / ":" / ".") "]" at s[0], or 0. */
static Py_ssize_t ip_literal(const uchar *s, Py_ssize_t n) {
    Py_ssize_t i = 1;
    if (n < 3 || s[0] != '[')
        return 0;
    while (i < n && (is_hex(s[i]) || s[i] == ':' || s[i] == '.'))
        i++;
    if (i == 1 || i >= n || s[i] != ']')
        return 0;
    return i + 1;
}

/* Length of the reg-name *(unreserved / sub-delims / pct-encoded) at s[0]. */
static Py_ssize_t reg_name(const uchar *s, Py_ssize_t n) {
    Py_ssize_t i = 0;
    for (;;) {
        if (i < n && is_reg_char(s[i]))
            i++;
        else if (i + 2 < n && s[i] == '%' && is_hex(s[i + 1]) && is_hex(s[i + 2]))
            i += 3;
        else
            return i;
    }
}

/* What a host or authority matched: the host part s[0:host_len] (an IP literal when
 * ip_literal), and the port digits after a ":" (port_at < 0 when there is no ":"). */
typedef struct {
    Py_ssize_t host_len;
    int ip_literal;
    Py_ssize_t port_at;
} host_match;

/* (IP-literal | reg-name) [":" *DIGIT] over all of s, as http._HOST_MATCH (min_reg 0),
 * _AUTHORITY_MATCH (min_reg 1) and, with port_required, _CONNECT_MATCH (":" 1*DIGIT). */
static int match_host(const uchar *s, Py_ssize_t n, int min_reg, int port_required, host_match *m) {
    Py_ssize_t p = ip_literal(s, n);
    m->ip_literal = p > 0;
    if (!m->ip_literal) {
        p = reg_name(s, n);
        if (p < min_reg)
            return 0;
    }
    m->host_len = p;
    m->port_at = -1;
    if (p == n)
        return !port_required;
    if (s[p] != ':')
        return 0;
    for (Py_ssize_t q = p + 1; q < n; q++)
        if (!is_digit(s[q]))
            return 0;
    if (port_required && p + 1 == n)
        return 0;
    m->port_at = p + 1;
    return 1;
}

/* split_host(host): (name, port or "") or Py_None (new references); NULL on error. */
static PyObject *split_host(PyObject *host) {
    Py_ssize_t n;
    const uchar *s = (const uchar *)PyUnicode_AsUTF8AndSize(host, &n);
    host_match m;
    if (s == NULL)
        return NULL;
    /* A non-ASCII host never matches: its UTF-8 bytes are all >= 0x80, as the str regex's
     * ASCII classes reject the characters. */
    if (!match_host(s, n, 0, 0, &m)) {
        Py_INCREF(Py_None);
        return Py_None;
    }
    const uchar *name = s;
    Py_ssize_t name_len = m.host_len;
    if (m.ip_literal) {
        name++;
        name_len -= 2;
    }
    if (m.port_at < 0)
        return Py_BuildValue("(s#O)", (const char *)name, name_len, v_empty);
    return Py_BuildValue("(s#s#)", (const char *)name, name_len, (const char *)s + m.port_at, n - m.port_at);
}

/* ------------------------------------------------------------------ errors */

/* Raise http.HTTPError(status, detail); returns NULL. */
static PyObject *http_fail(int status, const char *detail) {
    PyObject *e = PyObject_CallFunction(http_error, "is", status, detail);
    if (e != NULL) {
        PyErr_SetObject(http_error, e);
        Py_DECREF(e);
    }
    return NULL;
}

/* HTTPError(status, detail) with a str detail (stolen); NULL. */
static PyObject *http_fail_obj(int status, PyObject *detail) {
    if (detail == NULL)
        return NULL;
    PyObject *e = PyObject_CallFunction(http_error, "iO", status, detail);
    Py_DECREF(detail);
    if (e != NULL) {
        PyErr_SetObject(http_error, e);
        Py_DECREF(e);
    }
    return NULL;
}

/* ------------------------------------------------------------------ helpers */

static int set_item(PyObject *env, PyObject *key, PyObject *value) {
    if (value == NULL)
        return -1;
    int r = PyDict_SetItem(env, key, value);
    Py_DECREF(value);
    return r;
}

static PyObject *latin1(const uchar *s, Py_ssize_t n) { return PyUnicode_DecodeLatin1((const char *)s, n, NULL); }

/* urllib.parse.unquote_to_bytes(path).decode("latin-1"): "%" and two hex digits is a byte,
 * any other "%" stays. */
static PyObject *unquote_latin1(const uchar *s, Py_ssize_t n) {
    if (find_byte(s, n, '%') < 0)
        return latin1(s, n);
    uchar *out = PyMem_Malloc(n > 0 ? (size_t)n : 1);
    if (out == NULL)
        return PyErr_NoMemory();
    Py_ssize_t o = 0;
    for (Py_ssize_t i = 0; i < n;) {
        if (s[i] == '%' && i + 2 < n && is_hex(s[i + 1]) && is_hex(s[i + 2])) {
            out[o++] = (uchar)(hex_value(s[i + 1]) << 4 | hex_value(s[i + 2]));
            i += 3;
        } else {
            out[o++] = s[i++];
        }
    }
    PyObject *r = latin1(out, o);
    PyMem_Free(out);
    return r;
}

/* An integer attribute of http.Limits; -1 with an exception on error. */
static long long limit(PyObject *limits, const char *name) {
    PyObject *v = PyObject_GetAttrString(limits, name);
    if (v == NULL)
        return -1;
    long long r = PyLong_AsLongLong(v);
    Py_DECREF(v);
    return r;
}

/* The environ key of a header name that is a token: CONTENT_TYPE, CONTENT_LENGTH or
 * HTTP_ + the name uppercased with "-" as "_" (interned). NULL on error. */
static PyObject *header_key(const uchar *name, Py_ssize_t n) {
    char small[128];
    char *buf = small;
    Py_ssize_t len = n + 5;
    if ((size_t)len > sizeof small) {
        buf = PyMem_Malloc((size_t)len);
        if (buf == NULL)
            return PyErr_NoMemory();
    }
    memcpy(buf, "HTTP_", 5);
    for (Py_ssize_t i = 0; i < n; i++) {
        uchar c = name[i];
        buf[5 + i] = (char)(c == '-' ? '_' : (c >= 'a' && c <= 'z') ? c - 32 : c);
    }
    int plain = (n == 12 && memcmp(buf + 5, "CONTENT_TYPE", 12) == 0) ||
                (n == 14 && memcmp(buf + 5, "CONTENT_LENGTH", 14) == 0);
    PyObject *key = plain ? PyUnicode_FromStringAndSize(buf + 5, n) : PyUnicode_FromStringAndSize(buf, len);
    if (buf != small)
        PyMem_Free(buf);
    if (key != NULL)
        PyUnicode_InternInPlace(&key);
    return key;
}

/* The env value at key as bytes (borrowed pointer, valid while the value lives), or
 * *found = 0. -1 on error. */
static int env_bytes(PyObject *env, PyObject *key, const uchar **s, Py_ssize_t *n, int *found) {
    PyObject *v = PyDict_GetItemWithError(env, key);
    *found = 0;
    if (v == NULL)
        return PyErr_Occurred() ? -1 : 0;
    *s = (const uchar *)PyUnicode_AsUTF8AndSize(v, n);
    if (*s == NULL)
        return -1;
    *found = 1;
    return 0;
}

/* ------------------------------------------------------------------ parse_head */

typedef struct {
    long long line, fields, field_size, body;
} limits_t;

/* The header fields: the lines (count of them, maybe empty) from head[p] on; 0, or -1 with
 * an exception. */
static int parse_fields(const uchar *h, Py_ssize_t p, Py_ssize_t n, Py_ssize_t count, const limits_t *lim,
                        PyObject *env) {
    long long size_limit = lim->field_size - 2;
    for (; count > 0; count--) {
        Py_ssize_t e = find_byte(h + p, n - p, '\r'); /* every CR starts a CRLF: CTLs were checked */
        Py_ssize_t len = e < 0 ? n - p : e;
        const uchar *line = h + p;
        p += len + 2;
        if (len > size_limit) {
            http_fail(431, "header field too large");
            return -1;
        }
        Py_ssize_t i = find_byte(line, len, ':');
        if (i <= 0) {
            http_fail(400, len > 0 && is_ows(line[0]) ? "obsolete line folding" : "invalid header field");
            return -1;
        }
        int underscore = 0;
        for (Py_ssize_t j = 0; j < i; j++) {
            if (!is_tchar(line[j])) {
                http_fail(400, is_ows(line[0]) ? "obsolete line folding" : "invalid header field name");
                return -1;
            }
            underscore |= line[j] == '_';
        }
        if (underscore)
            continue; /* names with "_" are dropped */
        Py_ssize_t vs, vn = strip_ows(line + i + 1, len - i - 1, &vs);
        PyObject *key = header_key(line, i);
        if (key == NULL)
            return -1;
        PyObject *value = latin1(line + i + 1 + vs, vn);
        if (value == NULL) {
            Py_DECREF(key);
            return -1;
        }
        PyObject *old = PyDict_GetItemWithError(env, key);
        int r;
        if (old == NULL) {
            r = PyErr_Occurred() ? -1 : PyDict_SetItem(env, key, value);
        } else if (key == k_http_host || key == k_content_length || key == k_content_type) {
            const char *what = key == k_http_host ? "Host" : key == k_content_length ? "Content-Length" : "Content-Type";
            http_fail_obj(400, PyUnicode_FromFormat("duplicate %s header", what));
            r = -1;
        } else {
            PyObject *a = PyUnicode_FromFormat("%U,%U", old, value);
            r = a == NULL ? -1 : PyDict_SetItem(env, key, a);
            Py_XDECREF(a);
        }
        Py_DECREF(key);
        Py_DECREF(value);
        if (r < 0)
            return -1;
    }
    return 0;
}

/* Body framing (Transfer-Encoding, Content-Length, Expect); 0, or -1 with an exception. */
static int parse_framing(PyObject *env, int v11, const limits_t *lim, PyObject *limits, int *framing,
                         long long *length, int *expect_continue) {
    const uchar *s;
    Py_ssize_t n;
    int found;
    *framing = 0;
    *length = 0;
    *expect_continue = 0;
    if (PyDict_SetItem(env, k_wsgi_input, empty_body) < 0)
        return -1;
    if (env_bytes(env, k_http_expect, &s, &n, &found) < 0)
        return -1;
    if (found && v11) {
        Py_ssize_t a, m = strip_ows(s, n, &a);
        if (!lower_equals(s + a, m, "100-continue")) {
            http_fail(417, "unsupported Expect value");
            return -1;
        }
        *expect_continue = 1;
    }
    if (env_bytes(env, k_http_transfer_encoding, &s, &n, &found) < 0)
        return -1;
    if (found) {
        if (!v11) {
            http_fail(400, "Transfer-Encoding in an HTTP/1.0 request");
            return -1;
        }
        int has_cl = PyDict_Contains(env, k_content_length);
        if (has_cl < 0)
            return -1;
        if (has_cl) {
            http_fail(400, "both Content-Length and Transfer-Encoding");
            return -1;
        }
        Py_ssize_t codings = 0, chunked = 0, last_chunked = 0;
        for (Py_ssize_t p = 0; p <= n;) {
            Py_ssize_t c = find_byte(s + p, n - p, ',');
            Py_ssize_t len = c < 0 ? n - p : c;
            Py_ssize_t a, m = strip_ows(s + p, len, &a);
            if (m == 0) {
                http_fail(400, "invalid Transfer-Encoding");
                return -1;
            }
            for (Py_ssize_t j = 0; j < m; j++)
                if (!is_tchar(s[p + a + j])) {
                    http_fail(400, "invalid Transfer-Encoding");
                    return -1;
                }
            codings++;
            last_chunked = lower_equals(s + p + a, m, "chunked");
            chunked += last_chunked;
            p += len + 1;
        }
        if (chunked > 1 || (chunked == 1 && !last_chunked)) {
            http_fail(400, "chunked must be the last transfer coding, once");
            return -1;
        }
        if (chunked == 0 || codings > 1) {
            http_fail(501, "unsupported transfer coding");
            return -1;
        }
        *framing = 2;
        return 0;
    }
    if (env_bytes(env, k_content_length, &s, &n, &found) < 0)
        return -1;
    if (!found)
        return 0;
    /* str.isdigit() and str.isascii() and at most 18 characters */
    int ok = n > 0 && n <= 18;
    long long v = 0;
    for (Py_ssize_t i = 0; ok && i < n; i++) {
        ok = is_digit(s[i]);
        v = v * 10 + (s[i] - '0');
    }
    if (!ok) {
        http_fail(400, "invalid Content-Length");
        return -1;
    }
    if (lim->body && v > lim->body) {
        PyObject *b = PyObject_GetAttrString(limits, "body");
        if (b == NULL)
            return -1;
        http_fail_obj(413, PyUnicode_FromFormat("request body larger than limit_request_body (%S)", b));
        Py_DECREF(b);
        return -1;
    }
    *length = v;
    *framing = v ? 1 : 0;
    return 0;
}

/* Connection: close / keep-alive; -1 on error. */
static int keep_alive(PyObject *env, int v11) {
    const uchar *s;
    Py_ssize_t n;
    int found, close = 0, keep = 0;
    if (env_bytes(env, k_http_connection, &s, &n, &found) < 0)
        return -1;
    if (!found)
        return v11;
    for (Py_ssize_t p = 0; p <= n;) {
        Py_ssize_t c = find_byte(s + p, n - p, ',');
        Py_ssize_t len = c < 0 ? n - p : c;
        Py_ssize_t a, m = strip_ows(s + p, len, &a);
        close |= lower_equals(s + p + a, m, "close");
        keep |= lower_equals(s + p + a, m, "keep-alive");
        p += len + 1;
    }
    if (close)
        return 0;
    return v11 || keep;
}

static PyObject *parse_head(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 4 || !PyBytes_Check(args[0]) || !PyDict_Check(args[2]) || !PyUnicode_Check(args[3])) {
        PyErr_SetString(PyExc_TypeError, "parse_head(head: bytes, limits: Limits, base: dict, root_path: str)");
        return NULL;
    }
    if (http_error == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "gorn_native.setup() was not called");
        return NULL;
    }
    PyObject *limits = args[1], *base = args[2], *root_path = args[3];
    char *hb;
    Py_ssize_t n;
    if (PyBytes_AsStringAndSize(args[0], &hb, &n) < 0)
        return NULL;
    const uchar *h = (const uchar *)hb;
    limits_t lim;
    if ((lim.line = limit(limits, "line")) == -1 && PyErr_Occurred())
        return NULL;
    if ((lim.fields = limit(limits, "fields")) == -1 && PyErr_Occurred())
        return NULL;
    if ((lim.field_size = limit(limits, "field_size")) == -1 && PyErr_Occurred())
        return NULL;
    if ((lim.body = limit(limits, "body")) == -1 && PyErr_Occurred())
        return NULL;

    /* No CTL except HTAB outside CRLF pairs; counts the CRLFs (the lines after the first). */
    Py_ssize_t crlfs = 0, line_end = -1;
    for (Py_ssize_t i = 0; i < n; i++) {
        uchar c = h[i];
        if (c == '\r' && i + 1 < n && h[i + 1] == '\n') {
            if (line_end < 0)
                line_end = i;
            crlfs++;
            i++;
            continue;
        }
        if ((c < 0x20 && c != '\t') || c == 0x7f) {
            if (line_end < 0) {
                Py_ssize_t j = i; /* the first CRLF may still come */
                for (; j + 1 < n; j++)
                    if (h[j] == '\r' && h[j + 1] == '\n')
                        break;
                line_end = j + 1 < n ? j : -1;
            }
            if (line_end > lim.line)
                return http_fail(414, "request line too long");
            return http_fail(400, "invalid character in request head");
        }
    }
    Py_ssize_t ll = line_end < 0 ? n : line_end;
    if (ll > lim.line)
        return http_fail(414, "request line too long");

    /* ---- request line: METHOD SP target SP version */
    Py_ssize_t sp1 = find_byte(h, ll, ' ');
    Py_ssize_t sp2 = sp1 < 0 ? -1 : find_byte(h + sp1 + 1, ll - sp1 - 1, ' ');
    if (sp2 >= 0)
        sp2 += sp1 + 1;
    if (sp2 < 0 || find_byte(h + sp2 + 1, ll - sp2 - 1, ' ') >= 0)
        return http_fail(400, "malformed request line");
    const uchar *mb = h, *target = h + sp1 + 1, *version = h + sp2 + 1;
    Py_ssize_t mn = sp1, tn = sp2 - sp1 - 1, vn = ll - sp2 - 1;
    int v11;
    if (vn == 8 && memcmp(version, "HTTP/1.1", 8) == 0)
        v11 = 1;
    else if (vn == 8 && memcmp(version, "HTTP/1.0", 8) == 0)
        v11 = 0;
    else if (vn == 8 && memcmp(version, "HTTP/", 5) == 0 && is_digit(version[5]) && version[6] == '.' &&
             is_digit(version[7]))
        return http_fail(505, "HTTP version not supported");
    else
        return http_fail(400, "invalid HTTP version");
    int mi = -1;
    for (int i = 0; i < N_METHODS; i++)
        if ((size_t)mn == strlen(method_names[i]) && memcmp(mb, method_names[i], (size_t)mn) == 0) {
            mi = i;
            break;
        }
    PyObject *method;
    if (mi >= 0) {
        method = methods[mi];
        Py_INCREF(method);
    } else {
        /* a token of 3 to 20 characters without lowercase letters */
        int ok = mn >= 3 && mn <= 20;
        for (Py_ssize_t i = 0; ok && i < mn; i++)
            ok = is_tchar(mb[i]) && !(mb[i] >= 'a' && mb[i] <= 'z');
        if (!ok)
            return http_fail(400, "invalid request method");
        method = PyUnicode_FromStringAndSize((const char *)mb, mn);
        if (method == NULL)
            return NULL;
    }
    PyObject *env = NULL, *path = NULL, *hp = NULL, *authority = NULL;
    int ok = tn > 0;
    for (Py_ssize_t i = 0; ok && i < tn; i++)
        ok = target[i] != '\t' && target[i] < 0x80;
    if (!ok) {
        http_fail(400, "invalid request target");
        goto error;
    }

    /* ---- target: pq (with a "/" before it when slash) is path ["?" query] ["#" fragment] */
    const uchar *pq = target, *auth = NULL;
    Py_ssize_t pqn = tn, an = 0;
    int slash = 0;
    host_match hm;
    if (mi == M_CONNECT) {
        if (!match_host(target, tn, 1, 1, &hm)) {
            http_fail(400, "CONNECT needs an authority-form target");
            goto error;
        }
        auth = target;
        an = tn;
        pqn = 0;
    } else if (target[0] == '/') {
        /* origin-form */
    } else if (tn == 1 && target[0] == '*') {
        if (mi != M_OPTIONS) {
            http_fail(400, "asterisk-form target is only allowed with OPTIONS");
            goto error;
        }
    } else { /* absolute-form */
        Py_ssize_t j = -1;
        for (Py_ssize_t i = 0; i + 2 < tn; i++)
            if (target[i] == ':' && target[i + 1] == '/' && target[i + 2] == '/') {
                j = i;
                break;
            }
        if (j <= 0 || !(lower_equals(target, j, "http") || lower_equals(target, j, "https"))) {
            http_fail(400, "invalid request target");
            goto error;
        }
        const uchar *rest = target + j + 3;
        Py_ssize_t rn = tn - j - 3, k = 0;
        while (k < rn && rest[k] != '/' && rest[k] != '?' && rest[k] != '#')
            k++;
        if (!match_host(rest, k, 1, 0, &hm)) {
            http_fail(400, "invalid authority in request target");
            goto error;
        }
        auth = rest;
        an = k;
        pq = rest + k;
        pqn = rn - k;
        slash = pqn == 0 || pq[0] != '/';
    }
    Py_ssize_t hash = find_byte(pq, pqn, '#');
    if (hash >= 0)
        pqn = hash;
    Py_ssize_t q = find_byte(pq, pqn, '?');
    Py_ssize_t pn = q >= 0 ? q : pqn;
    const uchar *query = q >= 0 ? pq + q + 1 : pq;
    Py_ssize_t qn = q >= 0 ? pqn - q - 1 : 0;
    if (mi == M_CONNECT) {
        path = PyBytes_FromStringAndSize("", 0);
    } else {
        path = PyBytes_FromStringAndSize(NULL, pn + slash);
        if (path != NULL) {
            char *d = PyBytes_AsString(path);
            if (d == NULL)
                goto error;
            if (slash)
                d[0] = '/';
            if (pn > 0)
                memcpy(d + slash, pq, (size_t)pn);
        }
    }
    if (path == NULL)
        goto error;

    env = PyDict_Copy(base);
    if (env == NULL)
        goto error;
    if (PyDict_SetItem(env, k_request_method, method) < 0 ||
        set_item(env, k_raw_uri, latin1(target, tn)) < 0 ||
        PyDict_SetItem(env, k_server_protocol, v11 ? v_http11 : v_http10) < 0 ||
        set_item(env, k_query_string, latin1(query, qn)) < 0)
        goto error;
    char *pb;
    Py_ssize_t pbn;
    if (PyBytes_AsStringAndSize(path, &pb, &pbn) < 0)
        goto error;
    PyObject *path_info = unquote_latin1((const uchar *)pb, pbn);
    if (path_info == NULL)
        goto error;
    Py_ssize_t rl = PyUnicode_GetLength(root_path);
    if (rl > 0) {
        Py_ssize_t pl = PyUnicode_GetLength(path_info);
        int under = pl >= rl && PyUnicode_Tailmatch(path_info, root_path, 0, rl, -1) == 1 &&
                    (pl == rl || PyUnicode_ReadChar(path_info, rl) == '/');
        if (under) {
            PyObject *rest = PyUnicode_Substring(path_info, rl, pl);
            Py_DECREF(path_info);
            if ((path_info = rest) == NULL)
                goto error;
        } else if (PyDict_SetItem(env, k_script_name, v_empty) < 0) {
            Py_DECREF(path_info);
            goto error;
        }
    }
    if (set_item(env, k_path_info, path_info) < 0)
        goto error;

    /* ---- header fields */
    if (crlfs > lim.fields) {
        http_fail(431, "too many header fields");
        goto error;
    }
    if (parse_fields(h, ll + 2, n, crlfs, &lim, env) < 0)
        goto error;

    int framing, expect_continue;
    long long length;
    if (parse_framing(env, v11, &lim, limits, &framing, &length, &expect_continue) < 0)
        goto error;
    int keepalive = keep_alive(env, v11);
    if (keepalive < 0)
        goto error;

    /* ---- Host: required in HTTP/1.1, valid when present; an authority in the target wins */
    PyObject *host = PyDict_GetItemWithError(env, k_http_host);
    if (host == NULL) {
        if (PyErr_Occurred())
            goto error;
        if (v11) {
            http_fail(400, "missing Host header");
            goto error;
        }
        hp = Py_None;
        Py_INCREF(hp);
    } else {
        if ((hp = split_host(host)) == NULL)
            goto error;
        if (hp == Py_None) {
            http_fail(400, "invalid Host header");
            goto error;
        }
    }
    if (auth != NULL) {
        authority = latin1(auth, an);
        if (authority == NULL)
            goto error;
        if (mi != M_CONNECT && PyDict_SetItem(env, k_http_host, authority) < 0)
            goto error;
        Py_DECREF(hp);
        if ((hp = split_host(authority)) == NULL)
            goto error;
        if (hp == Py_None) { /* not reached: an authority matched a narrower pattern */
            http_fail(400, "invalid authority in request target");
            goto error;
        }
        Py_CLEAR(authority);
    }
    return Py_BuildValue("(NNNOOiLON)", env, method, path, v11 ? Py_True : Py_False, keepalive ? Py_True : Py_False,
                         framing, length, expect_continue ? Py_True : Py_False, hp);

error:
    Py_XDECREF(env);
    Py_XDECREF(method);
    Py_XDECREF(path);
    Py_XDECREF(hp);
    Py_XDECREF(authority);
    return NULL;
}


/* ------------------------------------------------------------------ header_block */

/* A growing byte buffer (PyMem). */
typedef struct {
    char *data;
    Py_ssize_t len, cap;
} buffer;

static int buf_add(buffer *b, const void *s, Py_ssize_t n) {
    if (b->len + n > b->cap) {
        Py_ssize_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n)
            cap *= 2;
        char *d = PyMem_Realloc(b->data, (size_t)cap);
        if (d == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, s, (size_t)n);
    b->len += n;
    return 0;
}

/* Appends the latin-1 form of the UTF-8 text s[0:n]; 1 if a character is a CTL other than
 * HTAB (the twin's _BAD_CHARS) or not latin-1, 0 if appended, -1 on error. */
static int add_latin1(buffer *b, const uchar *s, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++) {
        uchar c = s[i];
        if (c < 0x80) {
            if ((c < 0x20 && c != '\t') || c == 0x7f)
                return 1;
            continue;
        }
        if ((c != 0xC2 && c != 0xC3) || i + 1 >= n)
            return 1; /* beyond U+00FF */
        i++;
    }
    Py_ssize_t start = b->len;
    if (buf_add(b, s, n) < 0) /* room for at least n bytes; rewritten below, shorter */
        return -1;
    Py_ssize_t o = start;
    for (Py_ssize_t i = 0; i < n; i++) {
        uchar c = s[i];
        if (c >= 0x80)
            c = (uchar)(((c & 0x1F) << 6) | (s[++i] & 0x3F));
        b->data[o++] = (char)c;
    }
    b->len = o;
    return 0;
}

enum { H_OTHER, H_CONTENT_LENGTH, H_CONNECTION, H_DATE, H_SERVER, H_HOP };

static int header_kind(const uchar *low, Py_ssize_t n) {
    static const struct {
        const char *name;
        int kind;
    } special[] = {
        {"content-length", H_CONTENT_LENGTH}, {"connection", H_CONNECTION}, {"date", H_DATE},
        {"server", H_SERVER}, {"keep-alive", H_HOP}, {"te", H_HOP}, {"trailer", H_HOP},
        {"transfer-encoding", H_HOP}, {"upgrade", H_HOP}, {"proxy-connection", H_HOP},
    };
    for (size_t i = 0; i < sizeof special / sizeof special[0]; i++)
        if (lower_equals(low, n, special[i].name))
            return special[i].kind;
    return H_OTHER;
}

static PyObject *header_block(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "header_block(headers, code)");
        return NULL;
    }
    if (header_block_py == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "gorn_native.setup() was not called");
        return NULL;
    }
    PyObject *headers = args[0];
    long code = PyLong_AsLong(args[1]);
    if (code == -1 && PyErr_Occurred())
        return NULL;
    if (!PyList_CheckExact(headers))
        goto twin;
    buffer b = {NULL, 0, 0};
    long long length = -1;
    int app_close = 0, has_date = 0, has_server = 0;
    Py_ssize_t count = PyList_Size(headers);
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *item = PyList_GetItem(headers, i); /* borrowed; the list is not changed here */
        PyObject *name, *value;
        if (item == NULL)
            goto error;
        if (PyTuple_CheckExact(item) && PyTuple_Size(item) == 2) {
            name = PyTuple_GetItem(item, 0);
            value = PyTuple_GetItem(item, 1);
        } else if (PyList_CheckExact(item) && PyList_Size(item) == 2) {
            name = PyList_GetItem(item, 0);
            value = PyList_GetItem(item, 1);
        } else {
            goto refused;
        }
        if (name == NULL || value == NULL)
            goto error;
        if (!PyUnicode_CheckExact(name) || !PyUnicode_CheckExact(value))
            goto refused;
        Py_ssize_t nn, vn;
        const uchar *ns = (const uchar *)PyUnicode_AsUTF8AndSize(name, &nn);
        if (ns == NULL)
            goto refused_clear; /* a lone surrogate: not a token */
        const uchar *vs = (const uchar *)PyUnicode_AsUTF8AndSize(value, &vn);
        if (vs == NULL)
            goto refused_clear;
        if (nn == 0)
            goto refused;
        for (Py_ssize_t j = 0; j < nn; j++)
            if (!is_tchar(ns[j]))
                goto refused;
        switch (header_kind(ns, nn)) {
        case H_CONTENT_LENGTH: {
            Py_ssize_t a, m = strip_ows(vs, vn, &a);
            long long v = 0;
            if (m == 0 || m > 18)
                goto refused; /* not digits, or beyond what the twin's fast checks cover */
            for (Py_ssize_t j = 0; j < m; j++) {
                if (!is_digit(vs[a + j]))
                    goto refused;
                v = v * 10 + (vs[a + j] - '0');
            }
            if (length >= 0) {
                if (v != length)
                    goto refused;
                continue;
            }
            length = v;
            if (code == 204)
                continue; /* never in a 204 */
            break;
        }
        case H_CONNECTION:
            for (Py_ssize_t p = 0; p <= vn;) {
                Py_ssize_t c = find_byte(vs + p, vn - p, ',');
                Py_ssize_t len = c < 0 ? vn - p : c;
                for (Py_ssize_t j = 0; j < len; j++)
                    if ((vs[p + j] < 0x20 && vs[p + j] != '\t') || vs[p + j] == 0x7f)
                        goto refused;
                Py_ssize_t a, m = strip_ows(vs + p, len, &a);
                app_close |= lower_equals(vs + p + a, m, "close");
                p += len + 1;
            }
            continue;
        case H_DATE:
            has_date = 1;
            break;
        case H_SERVER:
            has_server = 1;
            break;
        case H_HOP:
            continue; /* the server frames the message */
        }
        if (buf_add(&b, ns, nn) < 0 || buf_add(&b, ": ", 2) < 0)
            goto error;
        int r = add_latin1(&b, vs, vn);
        if (r < 0)
            goto error;
        if (r > 0)
            goto refused;
        if (buf_add(&b, "\r\n", 2) < 0)
            goto error;
    }
    {
        PyObject *block = PyBytes_FromStringAndSize(b.data ? b.data : "", b.len);
        PyMem_Free(b.data);
        if (block == NULL)
            return NULL;
        PyObject *len_obj;
        if (length >= 0 && code != 204)
            len_obj = PyLong_FromLongLong(length);
        else {
            len_obj = Py_None;
            Py_INCREF(len_obj);
        }
        if (len_obj == NULL) {
            Py_DECREF(block);
            return NULL;
        }
        return Py_BuildValue("(NNOOO)", block, len_obj, app_close ? Py_True : Py_False,
                             has_date ? Py_True : Py_False, has_server ? Py_True : Py_False);
    }
refused_clear:
    PyErr_Clear();
refused:
    PyMem_Free(b.data);
twin:
    return PyObject_CallFunctionObjArgs(header_block_py, headers, args[1], NULL);
error:
    PyMem_Free(b.data);
    return NULL;
}

static PyObject *setup(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "setup(HTTPError, EMPTY_BODY, header_block_py)");
        return NULL;
    }
    PyObject *old[3] = {http_error, empty_body, header_block_py};
    for (int i = 0; i < 3; i++)
        Py_INCREF(args[i]);
    http_error = args[0];
    empty_body = args[1];
    header_block_py = args[2];
    for (int i = 0; i < 3; i++)
        Py_XDECREF(old[i]);
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"parse_head", (PyCFunction)(void (*)(void))parse_head, METH_FASTCALL,
     "parse_head(head, limits, base, root_path) -> (environ, method, path, v11, keepalive, framing, length, "
     "expect_continue, (host, port) or None); raises HTTPError. The twin of http.parse_head_py."},
    {"header_block", (PyCFunction)(void (*)(void))header_block, METH_FASTCALL,
     "header_block(headers, code) -> (block, length or None, app_close, has_date, has_server): the twin of "
     "wsgi.header_block_py, which it calls for headers it would refuse."},
    {"setup", (PyCFunction)(void (*)(void))setup, METH_FASTCALL,
     "setup(HTTPError, EMPTY_BODY, header_block_py): the exception parse_head raises, the empty wsgi.input and "
     "the twin header_block hands refused headers to."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "gorn_native", "gorn's native request-head parser (see gorn_worker/http.py).", -1,
    module_methods, NULL, NULL, NULL, NULL,
};

static int intern(PyObject **slot, const char *s) {
    *slot = PyUnicode_InternFromString(s);
    return *slot == NULL ? -1 : 0;
}

PyMODINIT_FUNC PyInit_gorn_native(void) {
    if (intern(&k_request_method, "REQUEST_METHOD") || intern(&k_raw_uri, "RAW_URI") ||
        intern(&k_server_protocol, "SERVER_PROTOCOL") || intern(&k_query_string, "QUERY_STRING") ||
        intern(&k_script_name, "SCRIPT_NAME") || intern(&k_path_info, "PATH_INFO") ||
        intern(&k_wsgi_input, "wsgi.input") || intern(&k_http_host, "HTTP_HOST") ||
        intern(&k_content_length, "CONTENT_LENGTH") || intern(&k_content_type, "CONTENT_TYPE") || intern(&k_http_transfer_encoding, "HTTP_TRANSFER_ENCODING") ||
        intern(&k_http_expect, "HTTP_EXPECT") || intern(&k_http_connection, "HTTP_CONNECTION") ||
        intern(&v_http11, "HTTP/1.1") || intern(&v_http10, "HTTP/1.0") || intern(&v_empty, ""))
        return NULL;
    for (int i = 0; i < N_METHODS; i++)
        if (intern(&methods[i], method_names[i]))
            return NULL;
    PyObject *m = PyModule_Create(&module_def);
    if (m != NULL && PyModule_AddIntConstant(m, "ABI", 2) < 0) { /* native.ABI */
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
