// The package against a real keygate: run under sdk/testbed.py, which
// starts one and sets the KEYGATE_* environment (its docstring lists it).
package behaviour

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	keygate "github.com/keygate/keygate/sdk/go"
)

func env(t *testing.T, name string) string {
	value := os.Getenv(name)
	if value == "" {
		t.Fatalf("%s is not set: run this suite under sdk/testbed.py", name)
	}
	return value
}

func client(t *testing.T, prefix string, configure ...func(*keygate.Transport)) (*http.Client, *keygate.Transport) {
	transport := &keygate.Transport{KeyID: env(t, "KEYGATE_"+prefix+"KEY_ID"), Secret: env(t, "KEYGATE_"+prefix+"SECRET")}
	for _, c := range configure {
		c(transport)
	}
	return &http.Client{Transport: transport, Timeout: 30 * time.Second}, transport
}

func token() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// ok fails the test unless the answer is a 2xx, and decodes its JSON.
func ok(t *testing.T) func(*http.Response, error) map[string]any {
	return func(resp *http.Response, err error) map[string]any { return decode(t, resp, err) }
}

func decode(t *testing.T, resp *http.Response, err error) map[string]any {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if refusal := keygate.ErrorFrom(resp); refusal != nil {
		t.Fatalf("refused: %v", refusal)
	}
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	return out
}

func refused(t *testing.T) func(*http.Response, error) *keygate.Error {
	return func(resp *http.Response, err error) *keygate.Error { return refusalOf(t, resp, err) }
}

func refusalOf(t *testing.T, resp *http.Response, err error) *keygate.Error {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	refusal := keygate.ErrorFrom(resp)
	if refusal == nil {
		t.Fatalf("not a refusal: %d", resp.StatusCode)
	}
	return refusal
}

func TestSignsGetsPostsAndStreamedBodies(t *testing.T) {
	base := env(t, "KEYGATE_URL")
	c, _ := client(t, "")
	if got := ok(t)(c.Get(base + "/v1/whoami"))["key_id"]; got != env(t, "KEYGATE_KEY_ID") {
		t.Fatal(got)
	}
	echo := ok(t)(c.Post(base+"/v1/echo", "application/json", strings.NewReader(`{"note":"café ✓"}`)))
	if echo["body"] != `{"note":"café ✓"}` {
		t.Fatal(echo)
	}
	reader, writer := io.Pipe()
	go func() {
		writer.Write([]byte("strea"))
		writer.Write([]byte("med bödy"))
		writer.Close()
	}()
	if got := ok(t)(c.Post(base+"/v1/echo", "text/plain", reader))["body"]; got != "streamed bödy" {
		t.Fatal(got)
	}
}

func TestSignsTheQueryExactlyAsSent(t *testing.T) {
	base := env(t, "KEYGATE_URL")
	c, _ := client(t, "")
	query := url.Values{"q": {"a b+c"}, "path": {"x/y%2Fz"}, "city": {"Zoë 東京"}, "k": {"1", "2"}}.Encode()
	ok(t)(c.Get(base + "/v1/whoami?" + query))
	ok(t)(c.Get(base + "/v1/whoami?q=a%20b+c&path=a%2Fb&city=Zo%C3%AB&k=1&k=2"))
	seen := ok(t)(c.Get(base + "/orders/7?q=a%20b+c&path=a%2Fb&k=1&k=2"))
	if seen["target"] != "/orders/7?q=a%20b+c&path=a%2Fb&k=1&k=2" {
		t.Fatal(seen)
	}
	body := []byte("put bytes")
	req, _ := http.NewRequest("PUT", base+"/notes/1", bytes.NewReader(body))
	sum := sha256.Sum256(body)
	if seen := ok(t)(c.Do(req)); seen["body_sha256"] != hex.EncodeToString(sum[:]) {
		t.Fatal(seen)
	}
}

func TestABodyOverTheLimitIsRefusedBeforeSending(t *testing.T) {
	c, _ := client(t, "", func(tr *keygate.Transport) { tr.MaxBodyBytes = 10 })
	_, err := c.Post(env(t, "KEYGATE_URL")+"/v1/echo", "text/plain", strings.NewReader(strings.Repeat("x", 11)))
	if !errors.Is(err, keygate.ErrBodyTooLarge) {
		t.Fatal(err)
	}
}

func TestAWrongSecretShowsBothStringsToSign(t *testing.T) {
	c, _ := client(t, "", func(tr *keygate.Transport) { tr.Secret = "sk_" + strings.Repeat("A", 43) })
	refusal := refused(t)(c.Get(env(t, "KEYGATE_URL") + "/v1/whoami?x=1"))
	if refusal.Code != "signature_mismatch" || refusal.Status != 401 || refusal.RequestID == "" {
		t.Fatal(refusal)
	}
	if !strings.Contains(refusal.ServerStringToSign, "/v1/whoami?x=1") || refusal.StringToSign != refusal.ServerStringToSign {
		t.Fatalf("%#v", refusal)
	}
	if !strings.Contains(refusal.Error(), "the secret differs") {
		t.Fatal(refusal.Error())
	}
}

func TestEachRefusalHasItsCode(t *testing.T) {
	base := env(t, "KEYGATE_URL")
	unknown, _ := client(t, "", func(tr *keygate.Transport) { tr.KeyID = "pk_" + strings.Repeat("Z", 24) })
	revoked, _ := client(t, "REVOKED_")
	narrow, _ := client(t, "NARROW_")
	main, _ := client(t, "", func(tr *keygate.Transport) { tr.MaxBodyBytes = 4 << 20 })
	cases := []struct {
		client *http.Client
		method string
		path   string
		body   string
		code   string
		status int
	}{
		{unknown, "GET", "/v1/whoami", "", "unknown_key", 401},
		{revoked, "GET", "/v1/whoami", "", "key_revoked", 401},
		{narrow, "POST", "/v1/echo", "{}", "forbidden", 403},
		{main, "POST", "/v1/echo", strings.Repeat("x", 64<<10+1), "body_too_large", 413},
	}
	for _, c := range cases {
		req, _ := http.NewRequest(c.method, base+c.path, strings.NewReader(c.body))
		refusal := refused(t)(c.client.Do(req))
		if refusal.Code != c.code || refusal.Status != c.status || refusal.Message == "" {
			t.Errorf("%s: %v", c.code, refusal)
		}
	}
}

func TestEveryMalformedVectorIsRefusedWithItsCode(t *testing.T) {
	raw, err := os.ReadFile(env(t, "KEYGATE_VECTORS"))
	if err != nil {
		t.Fatal(err)
	}
	var cases []map[string]string
	json.Unmarshal(raw, &struct {
		Malformed *[]map[string]string `json:"malformed"`
	}{&cases})
	if len(cases) == 0 {
		t.Fatal("no vectors")
	}
	for _, c := range cases {
		req, _ := http.NewRequest("GET", env(t, "KEYGATE_URL")+"/v1/whoami", nil)
		req.Header.Set("Authorization", c["authorization"])
		if refusal := refused(t)(http.DefaultClient.Do(req)); refusal.Code != c["expected_error"] {
			t.Errorf("%s: %v", c["name"], refusal)
		}
	}
}

func TestAReusedNonceIsRefused(t *testing.T) {
	base := env(t, "KEYGATE_URL")
	signed := keygate.Sign(keygate.Request{KeyID: env(t, "KEYGATE_KEY_ID"), Secret: env(t, "KEYGATE_SECRET"),
		Method: "GET", Target: "/v1/whoami", Timestamp: time.Now().Unix()})
	send := func() (*http.Response, error) {
		req, _ := http.NewRequest("GET", base+"/v1/whoami", nil)
		req.Header = signed.Header.Clone()
		return http.DefaultClient.Do(req)
	}
	ok(t)(send())
	if refusal := refused(t)(send()); refusal.Code != "nonce_reused" {
		t.Fatal(refusal)
	}
}

func TestSkewIsCorrectedFromServerTimeAndKept(t *testing.T) {
	shifted := env(t, "KEYGATE_SHIFTED_URL")
	c, transport := client(t, "")
	ok(t)(c.Get(shifted + "/v1/whoami"))
	if offset := transport.ClockOffset(); math.Abs(offset.Seconds()-600) > 5 {
		t.Fatal(offset)
	}
	ok(t)(c.Post(shifted+"/v1/echo", "text/plain", strings.NewReader("again")))
	off, _ := client(t, "", func(tr *keygate.Transport) { tr.DisableSkewCorrection = true })
	refusal := refused(t)(off.Get(shifted + "/v1/whoami"))
	if refusal.Code != "timestamp_out_of_range" || math.Abs(float64(refusal.ServerTime-time.Now().Unix()-600)) > 5 {
		t.Fatal(refusal)
	}
}

type counting struct{ n int32 }

func (c *counting) RoundTrip(req *http.Request) (*http.Response, error) {
	atomic.AddInt32(&c.n, 1)
	return http.DefaultTransport.RoundTrip(req)
}

func TestKeygatesOwn503IsRetried(t *testing.T) {
	count := &counting{}
	c, _ := client(t, "", func(tr *keygate.Transport) { tr.Base = count })
	ok(t)(c.Get(env(t, "KEYGATE_LOCKED_URL") + "/v1/whoami"))
	if count.n != 2 {
		t.Fatal(count.n)
	}
}

func TestAnUpstream503IsRetriedWithAFreshNonceAndAPostOnlyWhenAsked(t *testing.T) {
	base := env(t, "KEYGATE_URL")
	c, _ := client(t, "")
	ok(t)(c.Get(base + "/flaky/" + token()))
	if refusal := refused(t)(c.Post(base+"/flaky/"+token(), "text/plain", strings.NewReader("1"))); refusal.Code != "unavailable" {
		t.Fatal(refusal)
	}
	eager, _ := client(t, "", func(tr *keygate.Transport) {
		policy := keygate.DefaultRetryPolicy
		policy.RetryNonIdempotent = true
		tr.Retry = &policy
	})
	ok(t)(eager.Post(base+"/flaky/"+token(), "text/plain", strings.NewReader("1")))
}

func TestARateLimitIsWaitedOut(t *testing.T) {
	base := env(t, "KEYGATE_URL")
	c, _ := client(t, "LIMITED_")
	ok(t)(c.Get(base + "/v1/whoami"))
	ok(t)(c.Get(base + "/v1/whoami"))
	time.Sleep(1200 * time.Millisecond)
	once, _ := client(t, "LIMITED_", func(tr *keygate.Transport) { tr.Retry = &keygate.NoRetries })
	ok(t)(once.Get(base + "/v1/whoami"))
	refusal := refused(t)(once.Get(base + "/v1/whoami"))
	if refusal.Code != "rate_limited" || refusal.RetryAfter < time.Second {
		t.Fatal(refusal)
	}
}

func TestARotatedKeysOldSecretWorksDuringGrace(t *testing.T) {
	for _, prefix := range []string{"OLD_", "NEW_"} {
		c, _ := client(t, prefix)
		if got := ok(t)(c.Get(env(t, "KEYGATE_URL") + "/v1/whoami"))["key_id"]; got != env(t, "KEYGATE_"+prefix+"KEY_ID") {
			t.Fatal(got)
		}
	}
}

func TestRFC9421(t *testing.T) {
	base := env(t, "KEYGATE_URL")
	c, _ := client(t, "", func(tr *keygate.Transport) { tr.Scheme = keygate.RFC9421 })
	ok(t)(c.Get(base + "/v1/whoami?q=a%20b+c&k=1&k=2"))
	if got := ok(t)(c.Post(base+"/v1/echo", "text/plain", strings.NewReader("nine four two one")))["body"]; got != "nine four two one" {
		t.Fatal(got)
	}
	wrong, _ := client(t, "", func(tr *keygate.Transport) { tr.Scheme = keygate.RFC9421; tr.Secret = "sk_" + strings.Repeat("A", 43) })
	refusal := refused(t)(wrong.Get(base + "/v1/whoami"))
	if refusal.Code != "signature_mismatch" || !strings.Contains(refusal.StringToSign, `"@method": GET`) {
		t.Fatal(refusal)
	}
}

func TestACancelledContextStopsTheWait(t *testing.T) {
	c, _ := client(t, "LIMITED_")
	base := env(t, "KEYGATE_URL")
	time.Sleep(1200 * time.Millisecond)
	ok(t)(c.Get(base + "/v1/whoami"))
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", base+"/v1/whoami", nil)
	if _, err := c.Do(req); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatal(err)
	}
}
