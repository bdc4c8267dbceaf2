package keygate

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Error is a request keygate refused, with the contract's error code.
type Error struct {
	Code      string
	Status    int
	Message   string
	RequestID string
	// ServerTime is the server's Unix time, with timestamp_out_of_range.
	ServerTime int64
	// RetryAfter is the server's Retry-After, with 429 and 503.
	RetryAfter time.Duration
	// ServerStringToSign is what the server signed over, with signature_mismatch.
	ServerStringToSign string
	// StringToSign is what this client signed over.
	StringToSign string
}

func (e *Error) Error() string {
	text := fmt.Sprintf("%d %s: %s", e.Status, e.Code, e.Message)
	if e.RequestID != "" {
		text += " (request id " + e.RequestID + ")"
	}
	if diff := e.Diff(); diff != "" {
		text += "\n" + diff
	}
	return text
}

// Diff shows both strings to sign side by side, the first differing line
// marked with ">", or "" when the server did not send its own.
func (e *Error) Diff() string {
	if e.ServerStringToSign == "" || e.StringToSign == "" {
		return ""
	}
	return DiffLines(e.StringToSign, e.ServerStringToSign)
}

// DiffLines puts two strings to sign side by side, marking the first
// differing line.
func DiffLines(ours, theirs string) string {
	a, b := strings.Split(ours, "\n"), strings.Split(theirs, "\n")
	width := 4
	for _, line := range a {
		if len(line) > width {
			width = len(line)
		}
	}
	var out strings.Builder
	fmt.Fprintf(&out, "  %-*s | server's", width, "ours")
	marked := false
	for i := 0; i < len(a) || i < len(b); i++ {
		var left, right string
		if i < len(a) {
			left = a[i]
		}
		if i < len(b) {
			right = b[i]
		}
		mark := " "
		if left != right && !marked {
			mark, marked = ">", true
		}
		fmt.Fprintf(&out, "\n%s %-*s | %s", mark, width, left, right)
	}
	if !marked {
		out.WriteString("\n  (the lines are equal: the secret differs)")
	}
	return out.String()
}

type refusalBody struct {
	Error *struct {
		Code         *string         `json:"code"`
		Message      string          `json:"message"`
		RequestID    string          `json:"request_id"`
		ServerTime   json.RawMessage `json:"server_time"`
		StringToSign string          `json:"string_to_sign"`
	} `json:"error"`
}

// ParseError reads a refusal from an answer's status, header and body, or
// returns nil when the answer is not one.
func ParseError(status int, header http.Header, body []byte, stringToSign string) *Error {
	if status < 400 {
		return nil
	}
	var parsed refusalBody
	if json.Unmarshal(body, &parsed) != nil || parsed.Error == nil || parsed.Error.Code == nil {
		return nil
	}
	e := &Error{
		Code:               *parsed.Error.Code,
		Status:             status,
		Message:            parsed.Error.Message,
		RequestID:          parsed.Error.RequestID,
		ServerStringToSign: parsed.Error.StringToSign,
		StringToSign:       stringToSign,
	}
	if e.RequestID == "" {
		e.RequestID = header.Get("X-Request-Id")
	}
	e.ServerTime, _ = strconv.ParseInt(string(parsed.Error.ServerTime), 10, 64)
	if wait, ok := parseRetryAfter(header.Get("Retry-After")); ok {
		e.RetryAfter = wait
	}
	return e
}

// ErrorFrom returns the refusal in a response from a Transport, or nil. It
// reads the body and puts it back, so the caller can still read it.
func ErrorFrom(resp *http.Response) *Error {
	if resp == nil || resp.StatusCode < 400 {
		return nil
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxRefusalBytes))
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(body))
	if err != nil {
		return nil
	}
	var signed string
	if resp.Request != nil {
		signed, _ = resp.Request.Context().Value(signedOverKey{}).(string)
	}
	return ParseError(resp.StatusCode, resp.Header, body, signed)
}

// Refusals are small JSON documents; a larger body is not one of keygate's.
const maxRefusalBytes = 64 << 10

func parseRetryAfter(value string) (time.Duration, bool) {
	seconds, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
	if err != nil || seconds < 0 { // an HTTP date: treated as absent
		return 0, false
	}
	return time.Duration(seconds * float64(time.Second)), true
}
