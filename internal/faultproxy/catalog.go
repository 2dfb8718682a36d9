package faultproxy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
)

// maxTokenBody bounds the Keystone token response read into memory for
// rewriting. A catalog of a few services is a few KiB; 8 MiB is generous.
const maxTokenBody = 8 << 20

// isTokenPath reports whether path is Keystone's token API (…/v3/auth/tokens).
func isTokenPath(path string) bool {
	return strings.HasSuffix(strings.TrimSuffix(path, "/"), "/auth/tokens")
}

// rewriteCatalog rewrites every token.catalog[].endpoints[].url of a Keystone
// v3 token response body with mapURL(serviceType, url) and returns the new
// body. Everything else in the document is kept (numbers keep their text;
// object keys come out sorted). A body without a catalog (an unscoped token)
// is returned unchanged.
func rewriteCatalog(body []byte, mapURL func(service, rawURL string) (string, error)) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var doc map[string]any
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("token response is not a JSON object: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("token response has data after its JSON object")
	}
	token, ok := doc["token"].(map[string]any)
	if !ok {
		return nil, errors.New(`token response has no "token" object`)
	}
	rawCatalog, ok := token["catalog"]
	if !ok || rawCatalog == nil {
		return body, nil
	}
	catalog, ok := rawCatalog.([]any)
	if !ok {
		return nil, errors.New(`token "catalog" is not a list`)
	}
	for i, rawEntry := range catalog {
		entry, ok := rawEntry.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("catalog entry %d is not an object", i)
		}
		service, ok := entry["type"].(string)
		if !ok || service == "" {
			return nil, fmt.Errorf(`catalog entry %d has no "type"`, i)
		}
		endpoints, ok := entry["endpoints"].([]any)
		if !ok {
			return nil, fmt.Errorf(`catalog entry %d (%s) has no "endpoints" list`, i, service)
		}
		for j, rawEndpoint := range endpoints {
			endpoint, ok := rawEndpoint.(map[string]any)
			if !ok {
				return nil, fmt.Errorf("catalog entry %d (%s) endpoint %d is not an object", i, service, j)
			}
			rawURL, ok := endpoint["url"].(string)
			if !ok {
				return nil, fmt.Errorf(`catalog entry %d (%s) endpoint %d has no "url"`, i, service, j)
			}
			proxied, err := mapURL(service, rawURL)
			if err != nil {
				return nil, fmt.Errorf("catalog entry %d (%s) endpoint %d: %w", i, service, j, err)
			}
			endpoint["url"] = proxied
		}
	}
	var out bytes.Buffer
	enc := json.NewEncoder(&out)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(doc); err != nil {
		return nil, fmt.Errorf("encoding the rewritten token response: %w", err)
	}
	return bytes.TrimSuffix(out.Bytes(), []byte("\n")), nil
}
