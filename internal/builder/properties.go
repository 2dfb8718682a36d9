package builder

import (
	"maps"
	"strings"
)

// This file is the one list of which properties of the build cloud's image
// travel with its copies. A copy must boot and be found as the original
// is: it carries everything Nova, GARM or an operator reads (architecture,
// os_*, hw_*, img_* hints, trait:*, the --base-image-property values the
// snapshot inherited from its base, our grib_* ones with grib_base_sha256)
// and nothing that describes the original's place in its own cloud (the
// server it was made from, its owner, its stores, its volumes) or its
// original data (hashes, signatures), which a copy in another cloud, or
// converted to another format, would carry as a lie.

// cloudOwnProperties are properties that belong to one cloud's image and
// are never copied, each with why.
func cloudOwnProperties() map[string]string {
	return map[string]string{
		"instance_uuid":          "the server the snapshot was made from",
		"base_image_ref":         "the base image's ID in the build cloud",
		"image_type":             "Nova's snapshot/backup marker",
		"image_location":         "where Nova stored the snapshot",
		"image_state":            "Nova's snapshot state",
		"user_id":                "the user who made the snapshot",
		"owner_id":               "the build project",
		"owner_project_name":     "the build project's name",
		"owner_user_name":        "the build user's name",
		"boot_roles":             "the build user's roles",
		"block_device_mapping":   "the builder's volumes",
		"bdm_v2":                 "the builder's volumes",
		"root_device_name":       "the builder's root device",
		"stores":                 "the build cloud's Glance stores",
		"direct_url":             "the build cloud's storage location",
		"locations":              "the build cloud's storage locations",
		"os_hash_algo":           "computed by each Glance for its data",
		"os_hash_value":          "computed by each Glance for its data",
		"os_hidden":              "set per copy while it is checked",
		"kernel_id":              "an image ID in the build cloud",
		"ramdisk_id":             "an image ID in the build cloud",
		"clean_attempts":         "Nova's bookkeeping",
		PropPublished:            "set on each copy once it is checked",
		"cache_in_nova":          "a per-cloud cache hint",
		"instance_type_flavorid": "the builder's flavor",
	}
}

// cloudOwnPrefixes are prefixes of properties that are never copied.
func cloudOwnPrefixes() []string {
	return []string{
		"os_glance_",       // reserved by Glance: import and store state
		"owner_specified.", // the uploader's hashes of the original data
		"img_signature",    // a signature of the original data, a key in one cloud's key manager
		"instance_type_",   // the builder's flavor (older Nova)
		"cinder_",          // volume bookkeeping of one cloud
		"image_cache_",     // cache state of one cloud
	}
}

// cloudOwn reports whether property k belongs to one cloud's image.
func cloudOwn(k string) bool {
	if _, ok := cloudOwnProperties()[k]; ok {
		return true
	}
	for _, p := range cloudOwnPrefixes() {
		if strings.HasPrefix(k, p) {
			return true
		}
	}
	return false
}

// carriedProperties are the properties of a copy of an image with
// properties src: src's, less those that belong to its cloud, with own
// (the build's grib_ and os_ properties) set over them.
func carriedProperties(src, own map[string]string) map[string]string {
	out := make(map[string]string, len(src)+len(own))
	for k, v := range src {
		if !cloudOwn(k) {
			out[k] = v
		}
	}
	maps.Copy(out, own)
	return out
}
