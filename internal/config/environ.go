package config

import "strings"

// Getenv returns a getenv over environ (KEY=VALUE entries, as os.Environ
// gives them): the last value of key, or "" when it is unset. Commands take
// the environment as a value so that tests choose it.
func Getenv(environ []string) func(string) string {
	return func(key string) string {
		val := ""
		for _, kv := range environ {
			if k, v, ok := strings.Cut(kv, "="); ok && k == key {
				val = v
			}
		}
		return val
	}
}
