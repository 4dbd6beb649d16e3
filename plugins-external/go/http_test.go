package plugin

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// Through a stand-in for the daemon's proxy, even for a made-up host and a
// loopback one (http.ProxyFromEnvironment would skip 127.0.0.1).
func TestHTTPClientGoesThroughTheProxyForEveryHost(t *testing.T) {
	var seen []string
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = append(seen, r.Method+" "+r.RequestURI)
		if r.Method == http.MethodConnect {
			http.Error(w, "taskrush proxy: denied", http.StatusForbidden)
			return
		}
		io.WriteString(w, "ok")
	}))
	defer proxy.Close()
	t.Setenv("HTTP_PROXY", proxy.URL)
	t.Setenv("HTTPS_PROXY", proxy.URL)
	t.Setenv("NO_PROXY", "*")
	client := HTTPClient(5 * time.Second)
	for _, u := range []string{"http://receiver.test/hook", "http://127.0.0.1:9/x"} {
		resp, err := client.Post(u, "application/json", strings.NewReader("{}"))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != "ok" {
			t.Fatalf("%s: %d %q", u, resp.StatusCode, body)
		}
	}
	_, err := client.Get("https://other.test/x")
	if err == nil || !strings.Contains(err.Error(), "Forbidden") {
		t.Fatalf("a refused CONNECT: %v", err)
	}
	want := []string{"POST http://receiver.test/hook", "POST http://127.0.0.1:9/x", "CONNECT other.test:443"}
	if strings.Join(seen, "|") != strings.Join(want, "|") {
		t.Fatalf("the proxy saw %q, want %q", seen, want)
	}
}
