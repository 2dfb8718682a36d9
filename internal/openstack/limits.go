package openstack

import (
	"context"

	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/limits"
)

// Limits reads the project's compute quota.
type Limits interface {
	// InstanceHeadroom is how many more servers the project may create
	// (Nova's maxTotalInstances - totalInstancesUsed, never below 0);
	// limited is false when the quota is -1 (no limit), n is then 0.
	InstanceHeadroom(ctx context.Context) (n int, limited bool, err error)
}

// InstanceHeadroom reads Nova's absolute limits (GET /limits).
func (c *Cloud) InstanceHeadroom(ctx context.Context) (int, bool, error) {
	var abs limits.Absolute
	err := Retry(ctx, c.log, "get limits", func(ctx context.Context) error {
		l, err := limits.Get(ctx, c.compute, nil).Extract()
		if err != nil {
			return err
		}
		abs = l.Absolute
		return nil
	})
	if err != nil {
		return 0, false, classify(err, "get compute limits")
	}
	n, limited := headroom(abs.MaxTotalInstances, abs.TotalInstancesUsed)
	return n, limited, nil
}

// headroom is max - used (at least 0); a negative max is no limit.
func headroom(maxTotal, used int) (int, bool) {
	if maxTotal < 0 {
		return 0, false
	}
	return max(0, maxTotal-used), true
}
