package plugin

import (
	"net/http"
	"net/url"
	"os"
	"time"
)

// ProxyFromEnv is an http.Transport Proxy function for the daemon's network
// proxy: HTTPS_PROXY (or https_proxy) for https, HTTP_PROXY (or http_proxy)
// for http, for every host. Unlike http.ProxyFromEnvironment it does not
// skip loopback hosts and ignores NO_PROXY: in the sandbox the proxy is a
// plugin's only way out. No variable: no proxy.
func ProxyFromEnv(req *http.Request) (*url.URL, error) {
	names := []string{"http_proxy", "HTTP_PROXY"}
	if req.URL.Scheme == "https" {
		names = []string{"https_proxy", "HTTPS_PROXY"}
	}
	for _, name := range names {
		if v := os.Getenv(name); v != "" {
			return url.Parse(v)
		}
	}
	return nil, nil
}

// HTTPClient returns a client whose requests go through the daemon's
// network proxy (see ProxyFromEnv), with an overall timeout per request.
//
// A plugin whose manifest grants network hosts gets HTTP_PROXY and
// HTTPS_PROXY pointing at a proxy of the daemon that allows only those hosts
// (https through CONNECT, TLS end to end); a host outside the grant is
// answered 403 with the reason in the body for http, and fails the request
// with an error naming "Forbidden" for https.
func HTTPClient(timeout time.Duration) *http.Client {
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			Proxy:                 ProxyFromEnv,
			ForceAttemptHTTP2:     true,
			MaxIdleConns:          4,
			IdleConnTimeout:       30 * time.Second,
			TLSHandshakeTimeout:   10 * time.Second,
			ExpectContinueTimeout: time.Second,
		},
	}
}
