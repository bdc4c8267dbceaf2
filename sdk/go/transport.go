package keygate

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"net/http"
	"strings"
	"sync/atomic"
	"time"
)

// DefaultMaxBodyBytes bounds the body a Transport buffers to sign.
const DefaultMaxBodyBytes = 1 << 20

// RetryPolicy says when a refused request is signed again and re-sent.
//
// Only 503 (unavailable) and 429 (rate_limited) are retried, after their
// Retry-After (or BaseDelay doubled each time when there is none), with up
// to 20% jitter. A wait longer than MaxWait is not waited: the answer is
// returned. POST and PATCH are retried only with RetryNonIdempotent: in
// gateway mode a 503 may come from the upstream after it acted.
// nonce_reused and signature errors are never retried.
type RetryPolicy struct {
	MaxRetries         int
	MaxWait            time.Duration
	BaseDelay          time.Duration
	RetryNonIdempotent bool
}

// DefaultRetryPolicy is used when a Transport's Retry is nil.
var DefaultRetryPolicy = RetryPolicy{MaxRetries: 2, MaxWait: 10 * time.Second, BaseDelay: 250 * time.Millisecond}

// NoRetries returns every answer as it comes.
var NoRetries = RetryPolicy{}

// RFC 9110 section 9.2.2: repeating these has the effect of sending once.
var idempotent = map[string]bool{"GET": true, "HEAD": true, "OPTIONS": true, "TRACE": true, "PUT": true, "DELETE": true}

// ErrBodyTooLarge: a body over MaxBodyBytes cannot be buffered to be signed.
var ErrBodyTooLarge = errors.New("keygate: the body is over MaxBodyBytes; it must be buffered to be signed")

// Transport is an http.RoundTripper that signs every request over the exact
// bytes sent (the body is buffered, up to MaxBodyBytes) and the target
// net/http puts on the request line (URL.RequestURI()), retries as Retry
// says with a fresh nonce and timestamp each time, and corrects clock skew:
// on timestamp_out_of_range it keeps the server's offset (ClockOffset) and
// retries once.
type Transport struct {
	KeyID, Secret string
	// Scheme is KG1 when empty.
	Scheme Scheme
	// Base sends the signed requests; http.DefaultTransport when nil.
	Base http.RoundTripper
	// Retry is DefaultRetryPolicy when nil.
	Retry *RetryPolicy
	// DisableSkewCorrection returns timestamp_out_of_range as it comes.
	DisableSkewCorrection bool
	// MaxBodyBytes is DefaultMaxBodyBytes when zero.
	MaxBodyBytes int64
	// Now is time.Now when nil.
	Now func() time.Time

	offsetMillis int64
}

type signedOverKey struct{}

// ClockOffset is what this Transport adds to the local clock, learnt from
// the server: alert on it if it grows.
func (t *Transport) ClockOffset() time.Duration {
	return time.Duration(atomic.LoadInt64(&t.offsetMillis)) * time.Millisecond
}

func (t *Transport) now() time.Time {
	if t.Now != nil {
		return t.Now()
	}
	return time.Now()
}

// RoundTrip implements http.RoundTripper.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	body, err := t.readBody(req)
	if err != nil {
		return nil, err
	}
	retry := DefaultRetryPolicy
	if t.Retry != nil {
		retry = *t.Retry
	}
	base := t.Base
	if base == nil {
		base = http.DefaultTransport
	}
	target := req.URL.RequestURI()
	retries, skewCorrected := 0, false
	for {
		timestamp := t.now().Add(t.ClockOffset()).Unix()
		signed := Sign(Request{KeyID: t.KeyID, Secret: t.Secret, Method: req.Method, Target: target,
			Body: body, Timestamp: timestamp, Scheme: t.Scheme})
		attempt := req.Clone(context.WithValue(req.Context(), signedOverKey{}, signed.StringToSign))
		for name, values := range signed.Header {
			attempt.Header[name] = values
		}
		attempt.ContentLength = int64(len(body))
		attempt.Body, attempt.GetBody = nil, nil
		if len(body) > 0 {
			attempt.Body = io.NopCloser(bytes.NewReader(body))
			attempt.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
		}
		resp, err := base.RoundTrip(attempt)
		if err != nil || (resp.StatusCode != 401 && resp.StatusCode != 429 && resp.StatusCode != 503) {
			return resp, err
		}
		answer, err := io.ReadAll(io.LimitReader(resp.Body, maxRefusalBytes))
		resp.Body.Close()
		resp.Body = io.NopCloser(bytes.NewReader(answer))
		if err != nil {
			return resp, nil
		}
		wait, again := t.nextStep(&retries, &skewCorrected, retry, req.Method, resp, answer)
		if !again {
			return resp, nil
		}
		if wait > 0 {
			timer := time.NewTimer(wait)
			select {
			case <-req.Context().Done():
				timer.Stop()
				return nil, req.Context().Err()
			case <-timer.C:
			}
		}
	}
}

func (t *Transport) readBody(req *http.Request) ([]byte, error) {
	if req.Body == nil || req.Body == http.NoBody {
		return nil, nil
	}
	defer req.Body.Close()
	limit := t.MaxBodyBytes
	if limit == 0 {
		limit = DefaultMaxBodyBytes
	}
	body, err := io.ReadAll(io.LimitReader(req.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("keygate: reading the body to sign: %w", err)
	}
	if int64(len(body)) > limit {
		return nil, ErrBodyTooLarge
	}
	return body, nil
}

func (t *Transport) nextStep(retries *int, skewCorrected *bool, retry RetryPolicy, method string, resp *http.Response, answer []byte) (time.Duration, bool) {
	var parsed struct {
		Error *struct {
			Code       string `json:"code"`
			ServerTime *int64 `json:"server_time"`
		} `json:"error"`
	}
	_ = json.Unmarshal(answer, &parsed)
	code := ""
	if parsed.Error != nil {
		code = parsed.Error.Code
	}
	if resp.StatusCode == 401 {
		if code != "timestamp_out_of_range" || t.DisableSkewCorrection || *skewCorrected || parsed.Error.ServerTime == nil {
			return 0, false
		}
		// Refused before anything was recorded or forwarded: safe for any method.
		offset := *parsed.Error.ServerTime*1000 + 500 - t.now().UnixMilli()
		atomic.StoreInt64(&t.offsetMillis, offset)
		*skewCorrected = true
		return 0, true
	}
	if code != "" && code != "unavailable" && code != "rate_limited" {
		return 0, false
	}
	if !idempotent[strings.ToUpper(method)] && !retry.RetryNonIdempotent {
		return 0, false
	}
	if *retries >= retry.MaxRetries {
		return 0, false
	}
	wait, ok := parseRetryAfter(resp.Header.Get("Retry-After"))
	if !ok {
		wait = retry.BaseDelay << *retries
	}
	if wait > retry.MaxWait {
		return 0, false
	}
	*retries++
	return wait + time.Duration(rand.Int63n(int64(wait)/5+1)), true
}
