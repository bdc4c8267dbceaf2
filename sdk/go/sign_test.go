package keygate

import (
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

type vectorRequest struct {
	KeyID         string  `json:"key_id"`
	Secret        string  `json:"secret"`
	Method        string  `json:"method"`
	RequestTarget string  `json:"request_target"`
	Timestamp     string  `json:"timestamp"`
	Nonce         string  `json:"nonce"`
	Body          string  `json:"body"`
	BodyBase64    *string `json:"body_base64"`
}

func (r vectorRequest) sign(t *testing.T) Signed {
	body := []byte(r.Body)
	if r.BodyBase64 != nil {
		var err error
		if body, err = base64.StdEncoding.DecodeString(*r.BodyBase64); err != nil {
			t.Fatal(err)
		}
	}
	ts, err := strconv.ParseInt(r.Timestamp, 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return Sign(Request{KeyID: r.KeyID, Secret: r.Secret, Method: r.Method, Target: r.RequestTarget,
		Body: body, Timestamp: ts, Nonce: r.Nonce})
}

func loadVectors(t *testing.T) (v struct {
	Valid []struct {
		vectorRequest
		Name     string `json:"name"`
		Expected struct {
			StringToSign  string `json:"string_to_sign"`
			Authorization string `json:"authorization"`
		} `json:"expected"`
	} `json:"valid"`
	Mismatch []struct {
		Name          string        `json:"name"`
		Request       vectorRequest `json:"request"`
		Authorization string        `json:"authorization"`
	} `json:"signature_mismatch"`
}) {
	path := os.Getenv("KEYGATE_VECTORS")
	if path == "" {
		path = filepath.Join("..", "..", "tests", "vectors", "kg1.json")
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

func TestEveryValidVectorSignsExactly(t *testing.T) {
	v := loadVectors(t)
	if len(v.Valid) == 0 {
		t.Fatal("no vectors")
	}
	for _, c := range v.Valid {
		signed := c.vectorRequest.sign(t)
		if signed.StringToSign != c.Expected.StringToSign {
			t.Errorf("%s: string to sign\n%q\nwant\n%q", c.Name, signed.StringToSign, c.Expected.StringToSign)
		}
		if got := signed.Header.Get("Authorization"); got != c.Expected.Authorization {
			t.Errorf("%s: %s, want %s", c.Name, got, c.Expected.Authorization)
		}
	}
}

func TestEveryMismatchVectorSignsDifferently(t *testing.T) {
	v := loadVectors(t)
	if len(v.Mismatch) == 0 {
		t.Fatal("no vectors")
	}
	for _, c := range v.Mismatch {
		if c.Request.sign(t).Header.Get("Authorization") == c.Authorization {
			t.Errorf("%s: signed the same", c.Name)
		}
	}
}

func TestTheDiffMarksTheFirstDifferingLine(t *testing.T) {
	diff := (&Error{StringToSign: "a\nb\nc", ServerStringToSign: "a\nB\nC"}).Diff()
	var marked []string
	for _, line := range strings.Split(diff, "\n") {
		if strings.HasPrefix(line, ">") {
			marked = append(marked, line)
		}
	}
	if len(marked) != 1 || !strings.Contains(marked[0], "b") || !strings.Contains(marked[0], "| B") {
		t.Fatalf("%q", diff)
	}
}
