package baseimage

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
)

// defaultClient bounds connecting and waiting for headers; a body's
// duration is bounded by the caller's ctx and the stall watchdog instead
// (an image is hundreds of MiB).
func defaultClient(proxy func(*http.Request) (*url.URL, error)) *http.Client {
	if proxy == nil {
		proxy = http.ProxyFromEnvironment
	}
	return &http.Client{Transport: &http.Transport{
		Proxy:                 proxy,
		DialContext:           (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout:   30 * time.Second,
		ResponseHeaderTimeout: 60 * time.Second,
		IdleConnTimeout:       90 * time.Second,
		ForceAttemptHTTP2:     true,
	}}
}

func (f *Fetcher) client() *http.Client {
	if f.HTTP != nil {
		return f.HTTP
	}
	return defaultClient(f.Proxy)
}

func (f *Fetcher) log() *slog.Logger {
	if f.Log != nil {
		return f.Log
	}
	return slog.New(slog.DiscardHandler)
}

// get sends one GET and classifies a failure: retryable reports whether
// another try may succeed. On success the caller closes resp.Body.
func (f *Fetcher) get(ctx context.Context, url, mirror string) (resp *http.Response, retryable bool, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, false, errs.Wrap(errs.KindUsage, err, "base image URL %s is invalid (check --base-image-url)", url)
	}
	resp, err = f.client().Do(req)
	if err != nil {
		return nil, true, errs.Wrap(errs.KindUnreachable, err, "cannot reach mirror %s for %s", mirror, url)
	}
	if resp.StatusCode == http.StatusOK {
		return resp, false, nil
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // lets the connection be reused
	resp.Body.Close()
	switch code := resp.StatusCode; {
	case code == http.StatusNotFound || code == http.StatusGone:
		return nil, false, errs.New(errs.KindNotFound, "%s: not found on mirror %s (HTTP %d); check the base, arch, serial and --base-image-url", url, mirror, code)
	case code == http.StatusUnauthorized || code == http.StatusForbidden:
		return nil, false, errs.New(errs.KindAuth, "%s: mirror %s refused access (HTTP %d)", url, mirror, code)
	case code == http.StatusRequestTimeout || code == http.StatusTooManyRequests || code >= 500:
		return nil, true, errs.New(errs.KindUnreachable, "%s: mirror %s answered HTTP %d", url, mirror, code)
	default:
		return nil, false, errs.New(errs.KindUnreachable, "%s: mirror %s answered HTTP %d", url, mirror, code)
	}
}

// getSmall fetches a small file (SHA256SUMS or its signature) into memory.
func (f *Fetcher) getSmall(ctx context.Context, url, mirror string) ([]byte, error) {
	var data []byte
	err := f.retry(ctx, url, mirror, func(ctx context.Context) (bool, error) {
		resp, retryable, err := f.get(ctx, url, mirror)
		if err != nil {
			return retryable, err
		}
		defer resp.Body.Close()
		data, err = io.ReadAll(io.LimitReader(resp.Body, maxSumsSize+1))
		if err != nil {
			return true, errs.Wrap(errs.KindUnreachable, err, "reading %s from mirror %s", url, mirror)
		}
		if len(data) > maxSumsSize {
			return false, errs.New(errs.KindBuild, "%s from mirror %s is larger than %d bytes; it is not a checksum file", url, mirror, maxSumsSize)
		}
		return false, nil
	})
	return data, err
}

// retry runs attempt until it succeeds, fails for good, runs out of tries
// or ctx ends; waits between tries grow from RetryDelay, doubling, capped.
func (f *Fetcher) retry(ctx context.Context, url, mirror string, attempt func(context.Context) (retryable bool, err error)) error {
	tries := f.Attempts
	if tries <= 0 {
		tries = defaultAttempts
	}
	delay := f.RetryDelay
	if delay <= 0 {
		delay = defaultRetryDelay
	}
	for i := 1; ; i++ {
		retryable, err := attempt(ctx)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctxError(ctx, url)
		}
		if !retryable {
			return err
		}
		if i >= tries {
			if errs.KindOf(err) == errs.KindInternal {
				err = errs.Wrap(errs.KindUnreachable, err, "mirror %s", mirror)
			}
			return fmt.Errorf("giving up after %d tries: %w", tries, err)
		}
		f.log().Warn("base image download failed; retrying", "url", url, "try", i, "of", tries, "wait", delay, "error", err)
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctxError(ctx, url)
		case <-t.C:
		}
		delay = min(2*delay, maxRetryDelay)
	}
}

// ctxError reports that ctx ended while fetching url: a deadline is a
// server too slow to reach (KindUnreachable); a cancellation stays
// unclassified, which errs reports as interrupted.
func ctxError(ctx context.Context, url string) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return errs.Wrap(errs.KindUnreachable, ctx.Err(), "timed out fetching %s", url)
	}
	return fmt.Errorf("fetching %s: %w", url, ctx.Err())
}

// progressReader calls onRead after every read that returned data.
type progressReader struct {
	r      io.Reader
	onRead func()
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	if n > 0 {
		p.onRead()
	}
	return n, err
}

// ctxReader fails reads once ctx has ended, so that hashing a large file
// stops promptly on Ctrl-C.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(b []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(b)
}

// hashFile returns the hex SHA-256 and size of the file at path.
func hashFile(ctx context.Context, path string) (string, int64, error) {
	file, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer file.Close()
	h := sha256.New()
	n, err := io.Copy(h, ctxReader{ctx, file})
	if err != nil {
		return "", 0, err
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// syncDir makes a rename in dir durable; failure only weakens durability.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
}

// removeStaleTemps deletes temporary download files that a killed process
// left in dir. Only old ones: a younger one may belong to a fetch running now.
func (f *Fetcher) removeStaleTemps(dir string) {
	matches, _ := filepath.Glob(filepath.Join(dir, ".*.part-*"))
	for _, m := range matches {
		if fi, err := os.Stat(m); err == nil && time.Since(fi.ModTime()) > staleTempAge {
			f.log().Info("removing a stale partial download", "path", m)
			_ = os.Remove(m)
		}
	}
}
