package openstack

import (
	"context"

	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/limits"

	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
)

// Limits reads the project's server and image quotas.
type Limits interface {
	// InstanceHeadroom is how many more servers the project may create
	// (Nova's maxTotalInstances - totalInstancesUsed, never below 0);
	// limited is false when the quota is -1 (no limit), n is then 0.
	InstanceHeadroom(ctx context.Context) (n int, limited bool, err error)
	// ImageHeadroom is how many more images the project may have (Glance's
	// image_count_total limit - usage, GET /v2/info/usage, Glance ≥ Yoga);
	// limited is false when the limit is negative (no limit).
	ImageHeadroom(ctx context.Context) (n int, limited bool, err error)
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

// ImageHeadroom reads Glance's quota usage (GET /v2/info/usage).
func (c *Cloud) ImageHeadroom(ctx context.Context) (int, bool, error) {
	var body struct {
		Usage map[string]struct {
			Limit *int `json:"limit"`
			Usage int  `json:"usage"`
		} `json:"usage"`
	}
	err := Retry(ctx, c.log, "get image usage", func(ctx context.Context) error {
		_, err := c.image.Get(ctx, c.image.ServiceURL("info", "usage"), &body, nil)
		return err
	})
	if err != nil {
		return 0, false, classify(err, "get image quota usage")
	}
	count, ok := body.Usage["image_count_total"]
	if !ok || count.Limit == nil {
		return 0, false, errs.New(errs.KindInternal, "get image quota usage: the answer has no image_count_total limit")
	}
	n, limited := headroom(*count.Limit, count.Usage)
	return n, limited, nil
}
