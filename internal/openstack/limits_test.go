package openstack

import (
	"context"
	"fmt"
	"net/http"
	"testing"
)

// InstanceHeadroom reads Nova's absolute limits: max - used, never below
// 0, and -1 (no quota) as unlimited; a failing Nova is an error.
func TestInstanceHeadroom(t *testing.T) {
	tests := []struct {
		name        string
		max, used   int
		status      int
		wantN       int
		wantLimited bool
		wantErr     bool
	}{
		{name: "room for three", max: 10, used: 7, wantN: 3, wantLimited: true},
		{name: "full", max: 10, used: 10, wantN: 0, wantLimited: true},
		{name: "over quota", max: 5, used: 6, wantN: 0, wantLimited: true},
		{name: "no quota", max: -1, used: 40, wantN: 0, wantLimited: false},
		{name: "forbidden", status: http.StatusForbidden, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeCloud(t)
			f.mux.HandleFunc("GET /compute/v2.1/limits", func(w http.ResponseWriter, _ *http.Request) {
				if tt.status != 0 {
					w.WriteHeader(tt.status)
					return
				}
				w.Header().Set("Content-Type", "application/json")
				fmt.Fprintf(w, `{"limits": {"absolute": {"maxTotalInstances": %d, "totalInstancesUsed": %d}, "rate": []}}`, tt.max, tt.used)
			})
			c, err := ConnectConfig(context.Background(), f.cfg)
			if err != nil {
				t.Fatal(err)
			}
			n, limited, err := c.InstanceHeadroom(context.Background())
			if (err != nil) != tt.wantErr {
				t.Fatalf("err %v, want error %v", err, tt.wantErr)
			}
			if n != tt.wantN || limited != tt.wantLimited {
				t.Errorf("headroom %d limited %v, want %d %v", n, limited, tt.wantN, tt.wantLimited)
			}
		})
	}
}

// ImageHeadroom reads Glance's image_count_total: limit - usage, never
// below 0, a negative limit as unlimited; an old Glance without the API
// (404) or an answer without the limit is an error.
func TestImageHeadroom(t *testing.T) {
	tests := []struct {
		name        string
		body        string
		status      int
		wantN       int
		wantLimited bool
		wantErr     bool
	}{
		{name: "room for two", body: `{"usage": {"image_size_total": {"limit": 1000, "usage": 10}, "image_count_total": {"limit": 10, "usage": 8}}}`, wantN: 2, wantLimited: true},
		{name: "over", body: `{"usage": {"image_count_total": {"limit": 10, "usage": 12}}}`, wantN: 0, wantLimited: true},
		{name: "no limit", body: `{"usage": {"image_count_total": {"limit": -1, "usage": 12}}}`, wantN: 0, wantLimited: false},
		{name: "no count", body: `{"usage": {"image_size_total": {"limit": 10, "usage": 1}}}`, wantErr: true},
		{name: "old glance", status: http.StatusNotFound, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeCloud(t)
			f.mux.HandleFunc("GET /image/v2/info/usage", func(w http.ResponseWriter, _ *http.Request) {
				if tt.status != 0 {
					w.WriteHeader(tt.status)
					return
				}
				w.Header().Set("Content-Type", "application/json")
				fmt.Fprint(w, tt.body)
			})
			n, limited, err := f.connect(t).ImageHeadroom(context.Background())
			if (err != nil) != tt.wantErr {
				t.Fatalf("err %v, want error %v", err, tt.wantErr)
			}
			if n != tt.wantN || limited != tt.wantLimited {
				t.Errorf("headroom %d limited %v, want %d %v", n, limited, tt.wantN, tt.wantLimited)
			}
		})
	}
}
