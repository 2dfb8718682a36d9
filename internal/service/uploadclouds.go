package service

import (
	"fmt"
	"strconv"

	"go.yaml.in/yaml/v3"
)

// fileUploadClouds is an upload_clouds list: each item a cloud's name, or
// {name: NAME, disk_format: FORMAT} to give that cloud's copies their own
// disk format.
type fileUploadClouds []fileUploadCloud

type fileUploadCloud struct {
	Name       string
	DiskFormat string
	line       int // of the item, for the format's errors
}

func (l *fileUploadClouds) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.SequenceNode {
		return &lineError{line: n.Line, msg: "upload_clouds: a list of clouds.yaml names, e.g. [cloud-a, {name: cloud-b, disk_format: raw}]"}
	}
	out := make(fileUploadClouds, 0, len(n.Content))
	for i, item := range n.Content {
		name := "upload_clouds." + strconv.Itoa(i)
		u := fileUploadCloud{line: item.Line}
		switch item.Kind {
		case yaml.ScalarNode:
			u.Name = item.Value
		case yaml.MappingNode:
			for j := 0; j+1 < len(item.Content); j += 2 {
				k, v := item.Content[j], item.Content[j+1]
				if v.Kind != yaml.ScalarNode {
					return &lineError{line: v.Line, msg: fmt.Sprintf("%s.%s: give a string", name, k.Value)}
				}
				switch k.Value {
				case "name":
					u.Name = v.Value
				case "disk_format":
					u.DiskFormat = v.Value
				default:
					return &lineError{line: k.Line, msg: fmt.Sprintf("%s: unknown key %s (an item gives name and disk_format)", name, k.Value)}
				}
			}
		default:
			return &lineError{line: item.Line, msg: name + ": give a cloud name or {name: NAME, disk_format: raw|qcow2}"}
		}
		out = append(out, u)
	}
	*l = out
	return nil
}

// names are the clouds in order.
func (l fileUploadClouds) names() []string {
	out := make([]string, 0, len(l))
	for _, u := range l {
		out = append(out, u.Name)
	}
	return out
}

// formats are the per-cloud disk formats as given (unparsed; RunSpec's
// rule checks them), nil when no item gives one.
func (l fileUploadClouds) formats() []string {
	var out []string
	for _, u := range l {
		if u.DiskFormat != "" {
			out = append(out, u.Name+"="+u.DiskFormat)
		}
	}
	return out
}
