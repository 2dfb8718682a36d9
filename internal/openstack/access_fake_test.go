package openstack

import (
	"context"
	"encoding/json"
	"net/http"
	"sync/atomic"
	"testing"
)

// TestEnsureSecurityGroupLostRace: a concurrent ensure deletes the group this
// one picked while its rules are added. Neutron then answers the rule POST
// with a 500 (a foreign key violation), not a 404; the ensure must see that
// the group is gone and start again, ending with the surviving group.
func TestEnsureSecurityGroupLostRace(t *testing.T) {
	f := newFakeCloud(t)
	var lists, gets atomic.Int32
	group := func(id string) map[string]any {
		return map[string]any{"id": id, "name": "grib-sg", "tenant_id": "proj-1", "project_id": "proj-1",
			"created_at": "2026-01-01T00:00:00Z", "security_group_rules": []any{}}
	}
	f.mux.HandleFunc("GET /network/v2.0/security-groups", func(w http.ResponseWriter, r *http.Request) {
		id := "sg-lost" // the first list sees the group the other ensure will delete
		if lists.Add(1) > 1 {
			id = "sg-kept"
		}
		serveJSON(w, http.StatusOK, map[string]any{"security_groups": []any{group(id)}})
	})
	f.mux.HandleFunc("GET /network/v2.0/security-groups/sg-lost", func(w http.ResponseWriter, r *http.Request) {
		gets.Add(1)
		http.Error(w, `{"NeutronError": {"type": "SecurityGroupNotFound", "message": "gone"}}`, http.StatusNotFound)
	})
	f.mux.HandleFunc("GET /network/v2.0/security-group-rules", func(w http.ResponseWriter, r *http.Request) {
		serveJSON(w, http.StatusOK, map[string]any{"security_group_rules": []any{}})
	})
	f.mux.HandleFunc("POST /network/v2.0/security-group-rules", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Rule map[string]any `json:"security_group_rule"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			t.Error(err)
		}
		if req.Rule["security_group_id"] == "sg-lost" {
			http.Error(w, `{"NeutronError": {"type": "HTTPInternalServerError", "message": "Request Failed: internal server error"}}`,
				http.StatusInternalServerError)
			return
		}
		req.Rule["id"] = "rule-1"
		serveJSON(w, http.StatusCreated, map[string]any{"security_group_rule": req.Rule})
	})

	g, err := f.connect(t).EnsureSecurityGroup(context.Background(), "grib-sg", "test")
	if err != nil {
		t.Fatal(err)
	}
	if g.ID != "sg-kept" || gets.Load() == 0 {
		t.Errorf("ensured %s after %d checks of the lost group; want sg-kept after at least one", g.ID, gets.Load())
	}
}
