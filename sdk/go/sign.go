// Package keygate signs requests to keygate-protected APIs
// (KG1-HMAC-SHA256, or RFC 9421) with an http.RoundTripper that retries
// safely, corrects clock skew and explains refusals. Standard library only.
//
//	client := &http.Client{Transport: &keygate.Transport{KeyID: "pk_...", Secret: "sk_..."}}
//	resp, err := client.Get("https://api.example.com/v1/whoami")
//	if refusal := keygate.ErrorFrom(resp); refusal != nil { ... }
package keygate

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"net/http"
	"strconv"
	"strings"
)

// Scheme is the signature scheme: KG1 (the default) or RFC9421.
type Scheme string

const (
	KG1     Scheme = "KG1-HMAC-SHA256"
	RFC9421 Scheme = "rfc9421"
)

// StringToSign is KG1's seven lines (CONTRACT section 2). target is the
// path and query exactly as on the request line; body the exact bytes sent.
func StringToSign(keyID string, timestamp int64, nonce, method, target string, body []byte) string {
	sum := sha256.Sum256(body)
	return strings.Join([]string{
		string(KG1),
		keyID,
		strconv.FormatInt(timestamp, 10),
		nonce,
		strings.ToUpper(method),
		target,
		hex.EncodeToString(sum[:]),
	}, "\n")
}

// NewNonce is 16 random bytes, hex: fresh for every request, retries too.
func NewNonce() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("keygate: no randomness: " + err.Error())
	}
	return hex.EncodeToString(b[:])
}

// Signed is what to add to a request, and what was signed.
type Signed struct {
	Header       http.Header
	StringToSign string
}

// Request describes one request to sign. An empty Nonce is a fresh one; an
// empty Scheme is KG1.
type Request struct {
	KeyID, Secret  string
	Method, Target string
	Body           []byte
	Timestamp      int64
	Nonce          string
	Scheme         Scheme
}

// Sign signs one request.
func Sign(r Request) Signed {
	nonce := r.Nonce
	if nonce == "" {
		nonce = NewNonce()
	}
	if r.Scheme == RFC9421 {
		return signRFC9421(r, nonce)
	}
	header := http.Header{}
	text := StringToSign(r.KeyID, r.Timestamp, nonce, r.Method, r.Target, r.Body)
	header.Set("Authorization", string(KG1)+" KeyId="+r.KeyID+", Timestamp="+
		strconv.FormatInt(r.Timestamp, 10)+", Nonce="+nonce+", Signature="+hex.EncodeToString(mac(r.Secret, text)))
	return Signed{Header: header, StringToSign: text}
}

// The HMAC key is the whole secret string's bytes, prefix included.
func mac(secret, text string) []byte {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(text))
	return m.Sum(nil)
}

// RFC 9421 with alg hmac-sha256, covering the method, the request target as
// sent and, when there is a body, its RFC 9530 Content-Digest.
func signRFC9421(r Request, nonce string) Signed {
	header := http.Header{}
	components := []string{`"@method"`, `"@request-target"`}
	lines := []string{`"@method": ` + strings.ToUpper(r.Method), `"@request-target": ` + r.Target}
	if len(r.Body) > 0 {
		sum := sha256.Sum256(r.Body)
		digest := "sha-256=:" + base64.StdEncoding.EncodeToString(sum[:]) + ":"
		header.Set("Content-Digest", digest)
		components = append(components, `"content-digest"`)
		lines = append(lines, `"content-digest": `+digest)
	}
	params := "(" + strings.Join(components, " ") + ");created=" + strconv.FormatInt(r.Timestamp, 10) +
		`;keyid="` + r.KeyID + `";nonce="` + nonce + `";alg="hmac-sha256"`
	lines = append(lines, `"@signature-params": `+params)
	base := strings.Join(lines, "\n")
	header.Set("Signature-Input", "sig1="+params)
	header.Set("Signature", "sig1=:"+base64.StdEncoding.EncodeToString(mac(r.Secret, base))+":")
	return Signed{Header: header, StringToSign: base}
}
