// Call a keygate-protected API with KG1-HMAC-SHA256 signatures.
//
// Go 1.19+, standard library only. Copy Sign (and Send if you use
// net/http) into your backend; the rest of this file is a demo.
//
//	KEYGATE_URL=http://127.0.0.1:8080 KEYGATE_KEY_ID=pk_... KEYGATE_SECRET=sk_... go run client.go
package main

import (
	"bufio"
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

const Scheme = "KG1-HMAC-SHA256"

// Sign returns the Authorization header and the string to sign for one
// request.
//
// target: path and query exactly as they go on the request line
// ("/v1/orders?id=7&q=a%20b"): not decoded, not re-ordered; with net/http,
// req.URL.RequestURI().
// body: the exact bytes you send (nil for none). Marshal JSON once, sign
// those bytes and send those bytes.
// timestamp and nonce: pass "" for now and a fresh random nonce (fresh for
// every request, retries too).
func Sign(keyID, secret, method, target string, body []byte, timestamp, nonce string) (authorization, stringToSign string) {
	if timestamp == "" {
		timestamp = strconv.FormatInt(time.Now().Unix(), 10)
	}
	if nonce == "" {
		random := make([]byte, 16)
		if _, err := rand.Read(random); err != nil {
			panic(err) // the system's random source failed: nothing safe to send
		}
		nonce = hex.EncodeToString(random)
	}
	bodyHash := sha256.Sum256(body)
	stringToSign = strings.Join([]string{
		Scheme,
		keyID,
		timestamp,
		nonce,
		strings.ToUpper(method),
		target,
		hex.EncodeToString(bodyHash[:]),
	}, "\n")
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(stringToSign))
	signature := hex.EncodeToString(mac.Sum(nil))
	authorization = fmt.Sprintf("%s KeyId=%s, Timestamp=%s, Nonce=%s, Signature=%s", Scheme, keyID, timestamp, nonce, signature)
	return authorization, stringToSign
}

// Send signs and sends one request. It returns the status, the answer's
// body and the string to sign (to compare with the server's on a
// signature_mismatch).
func Send(client *http.Client, keyID, secret, method, url string, body []byte, header http.Header) (int, []byte, string, error) {
	req, err := http.NewRequest(strings.ToUpper(method), url, bytes.NewReader(body))
	if err != nil {
		return 0, nil, "", err
	}
	for name, values := range header {
		req.Header[name] = values
	}
	// net/http puts req.URL.RequestURI() on the request line: sign that.
	authorization, stringToSign := Sign(keyID, secret, method, req.URL.RequestURI(), body, "", "")
	req.Header.Set("Authorization", authorization)
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, stringToSign, err
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(resp.Body)
	return resp.StatusCode, answer, stringToSign, err
}

// explainRefusal prints the error code and, for a signature mismatch, both
// strings to sign side by side.
func explainRefusal(answer []byte, ours string) {
	var refusal struct {
		Error struct {
			Code         string `json:"code"`
			Message      string `json:"message"`
			StringToSign string `json:"string_to_sign"`
			ServerTime   int64  `json:"server_time"`
		} `json:"error"`
	}
	if json.Unmarshal(answer, &refusal) != nil || refusal.Error.Code == "" {
		fmt.Printf("  refused: ?: %s\n", answer)
		return
	}
	e := refusal.Error
	fmt.Printf("  refused: %s: %s\n", e.Code, e.Message)
	if e.Code == "signature_mismatch" {
		fmt.Println("  string to sign, ours | server's ('!' marks a difference):")
		a, b := strings.Split(ours, "\n"), strings.Split(e.StringToSign, "\n")
		for i := 0; i < len(a) || i < len(b); i++ {
			x, y := "", ""
			if i < len(a) {
				x = a[i]
			}
			if i < len(b) {
				y = b[i]
			}
			mark := " "
			if x != y {
				mark = "!"
			}
			fmt.Printf("  %s %-66s | %s\n", mark, x, y)
		}
		if ours == e.StringToSign {
			fmt.Println("  the strings match, so the secret is wrong: use the whole secret of this key id, sk_ prefix included")
		}
	}
	if e.Code == "timestamp_out_of_range" {
		fmt.Printf("  server_time=%d our time=%d: fix the clock (NTP)\n", e.ServerTime, time.Now().Unix())
	}
}

// signVectors is a test hook: tab-separated key_id, secret, method, target,
// timestamp, nonce, body_hex lines on stdin; one Authorization header per
// line on stdout.
func signVectors() error {
	lines := bufio.NewScanner(os.Stdin)
	lines.Buffer(make([]byte, 1<<20), 1<<24)
	for lines.Scan() {
		if lines.Text() == "" {
			continue
		}
		f := strings.Split(lines.Text(), "\t")
		if len(f) != 7 {
			return fmt.Errorf("expected 7 tab-separated fields, got %d", len(f))
		}
		body, err := hex.DecodeString(f[6])
		if err != nil {
			return err
		}
		authorization, _ := Sign(f[0], f[1], f[2], f[3], body, f[4], f[5])
		fmt.Println(authorization)
	}
	return lines.Err()
}

func run() int {
	base := strings.TrimRight(os.Getenv("KEYGATE_URL"), "/")
	keyID, secret := os.Getenv("KEYGATE_KEY_ID"), os.Getenv("KEYGATE_SECRET")
	body, _ := json.Marshal(map[string]any{"order_id": 7, "note": "café – 東京 ✓"})
	calls := []struct {
		method, target string
		body           []byte
	}{
		{"GET", "/v1/whoami?probe=1&x=a%20b", nil},
		{"POST", "/v1/echo", body},
	}
	client := &http.Client{Timeout: 30 * time.Second}
	ok := true
	for _, call := range calls {
		header := http.Header{}
		if len(call.body) > 0 {
			header.Set("Content-Type", "application/json")
		}
		status, answer, stringToSign, err := Send(client, keyID, secret, call.method, base+call.target, call.body, header)
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s %s: %v\n", call.method, call.target, err)
			return 2
		}
		fmt.Printf("%s %s -> %d\n", call.method, call.target, status)
		if status >= 200 && status < 300 {
			fmt.Printf("  %s\n", answer)
		} else {
			ok = false
			explainRefusal(answer, stringToSign)
		}
	}
	if !ok {
		return 1
	}
	return 0
}

func main() {
	if len(os.Args) == 2 && os.Args[1] == "--sign-vectors" {
		if err := signVectors(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		return
	}
	os.Exit(run())
}
