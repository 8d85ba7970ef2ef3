package test

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gornhq/gorn/internal/testenv"
)

// python312 is the CPython >= 3.12 venv with Django 6 and httpbin (make venv312 builds
// it from test/fixtures/requirements-py312.txt): $GORN_TEST_PYTHON312, else .venv312.
func python312(t *testing.T) string {
	t.Helper()
	py := os.Getenv("GORN_TEST_PYTHON312")
	if py == "" {
		py = filepath.Join(repoRoot, ".venv312", "bin", "python")
	}
	if out, err := exec.Command(py, "-c", "import django, httpbin").CombinedOutput(); err != nil {
		testenv.Missing(t, "no CPython 3.12 venv with Django and httpbin (%s: %v %s); run `make venv312`", py, err, out)
	}
	return py
}

// httpbin (PyPI) accepts a chunked upload only from a server whose SERVER_SOFTWARE starts
// with "gunicorn/": under gorn it echoes the body back unchanged.
func TestHttpbinChunkedUpload(t *testing.T) {
	py := python312(t)
	g := startGorn(t, gornOpts{}, "--python", py, "-w", "2", "httpbin:app")
	body := "hello, chunked world\n"
	resp := rawRequest(t, g.addr, "POST /post HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\n"+
		"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"+
		"7\r\nhello, \r\n0e\r\nchunked world\n\r\n0\r\n\r\n", 20*time.Second)
	r, err := http.ReadResponse(bufio.NewReader(strings.NewReader(resp)), nil)
	if err != nil {
		t.Fatalf("reading the response %q: %v", resp, err)
	}
	defer r.Body.Close()
	raw, _ := io.ReadAll(r.Body)
	var echo struct {
		Data    string            `json:"data"`
		Headers map[string]string `json:"headers"`
	}
	if r.StatusCode != 200 || json.Unmarshal(raw, &echo) != nil {
		t.Fatalf("chunked POST /post: %d %s", r.StatusCode, raw)
	}
	if echo.Data != body {
		t.Errorf("httpbin got the body %q, want %q", echo.Data, body)
	}
	// A plain request works too, and httpbin sees the headers as sent.
	code, out := get(t, g.url("/headers"))
	if code != 200 || !strings.Contains(out, `"Host": "`+g.addr+`"`) {
		t.Errorf("GET /headers: %d %s", code, out)
	}
}

// A Django 6 project (test/fixtures/djangosite: admin, sessions, sqlite, a model) under
// gorn: migrate and createsuperuser, then the admin login through a cookie jar (CSRF
// token, session cookie), a model added through the admin form, and the list showing it.
func TestDjangoAdminLogin(t *testing.T) {
	py := python312(t)
	dir := filepath.Join(t.TempDir(), "djangosite")
	if out, err := exec.Command("cp", "-r", filepath.Join(repoRoot, "test", "fixtures", "djangosite"), dir).CombinedOutput(); err != nil {
		t.Fatalf("copying the fixture: %v %s", err, out)
	}
	manage := func(args ...string) {
		t.Helper()
		cmd := exec.Command(py, append([]string{"manage.py"}, args...)...)
		cmd.Dir = dir
		cmd.Env = append(cleanEnv(), "DJANGO_SUPERUSER_USERNAME=admin", "DJANGO_SUPERUSER_PASSWORD=s3cret-pass", "DJANGO_SUPERUSER_EMAIL=admin@example.com")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("manage.py %v: %v\n%s", args, err, out)
		}
	}
	manage("migrate", "--noinput")
	manage("createsuperuser", "--noinput")
	g := startGorn(t, gornOpts{dir: dir}, "--python", py, "-w", "2", "site_project.wsgi:application")

	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, Timeout: 20 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	fetch := func(method, path string, form url.Values) (*http.Response, string) {
		t.Helper()
		var body io.Reader
		if form != nil {
			body = strings.NewReader(form.Encode())
		}
		req, _ := http.NewRequest(method, g.url(path), body)
		if form != nil {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	csrf := regexp.MustCompile(`name="csrfmiddlewaretoken" value="([^"]+)"`)
	token := func(page string) string {
		t.Helper()
		m := csrf.FindStringSubmatch(page)
		if m == nil {
			t.Fatalf("no CSRF token in the form:\n%s", page)
		}
		return m[1]
	}

	resp, _ := fetch("GET", "/admin/", nil)
	if resp.StatusCode != 302 || !strings.HasPrefix(resp.Header.Get("Location"), "/admin/login/") {
		t.Fatalf("GET /admin/ before login: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	_, page := fetch("GET", "/admin/login/?next=/admin/", nil)
	wrong := url.Values{"csrfmiddlewaretoken": {token(page)}, "username": {"admin"}, "password": {"wrong"}, "next": {"/admin/"}}
	if resp, page = fetch("POST", "/admin/login/?next=/admin/", wrong); resp.StatusCode != 200 || !strings.Contains(page, "Please enter the correct username and password") {
		t.Fatalf("a wrong password: %d", resp.StatusCode)
	}
	login := url.Values{"csrfmiddlewaretoken": {token(page)}, "username": {"admin"}, "password": {"s3cret-pass"}, "next": {"/admin/"}}
	resp, _ = fetch("POST", "/admin/login/?next=/admin/", login)
	if resp.StatusCode != 302 || resp.Header.Get("Location") != "/admin/" {
		t.Fatalf("login: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	resp, page = fetch("GET", "/admin/", nil)
	if resp.StatusCode != 200 || !strings.Contains(page, "Site administration") || !strings.Contains(page, "Notes") {
		t.Fatalf("GET /admin/ after login: %d", resp.StatusCode)
	}
	// A POST without the token is refused by Django's CSRF protection.
	if resp, _ = fetch("POST", "/admin/notes/note/add/", url.Values{"title": {"forged"}}); resp.StatusCode != 403 {
		t.Errorf("POST without a CSRF token: %d, want 403", resp.StatusCode)
	}
	_, page = fetch("GET", "/admin/notes/note/add/", nil)
	add := url.Values{"csrfmiddlewaretoken": {token(page)}, "title": {"served by gorn"}, "body": {"über"}, "_save": {"Save"}}
	if resp, _ = fetch("POST", "/admin/notes/note/add/", add); resp.StatusCode != 302 {
		t.Fatalf("adding a note: %d", resp.StatusCode)
	}
	if resp, page = fetch("GET", "/admin/notes/note/", nil); resp.StatusCode != 200 || !strings.Contains(page, "served by gorn") {
		t.Errorf("the note list: %d, note missing", resp.StatusCode)
	}
	// REMOTE_ADDR is the peer, as under gunicorn.
	if _, page = fetch("GET", "/whoami", nil); page != "127.0.0.1 http" {
		t.Errorf("whoami: %q", page)
	}
}
