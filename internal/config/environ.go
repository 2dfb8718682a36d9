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

// childEnvNames are the variables every child process may see: where its
// programs are, whose home, the locale, the time zone and the temporary
// directory. Nothing else of ours (IMAGE_BUILDER_SECRET_*, GITHUB_TOKEN,
// OS_* credentials) reaches a child.
func childEnvNames() []string {
	return []string{
		"PATH", "HOME", "USER", "LOGNAME", "TMPDIR", "TZ",
		"LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "LC_NUMERIC", "LC_TIME", "LC_COLLATE",
		"LC_MONETARY", "LC_MESSAGES", "LC_PAPER", "LC_NAME", "LC_ADDRESS", "LC_TELEPHONE",
		"LC_MEASUREMENT", "LC_IDENTIFICATION",
	}
}

// NetworkEnv names what a child that reaches the network itself (the
// callback, e.g. garm-cli) needs from ours: the proxy variables and where
// the trusted CA certificates are (a private CA behind the proxy). None
// holds a credential of ours; pass them to ChildEnv.
func NetworkEnv() []string {
	return []string{"http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY",
		"SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"}
}

// ChildEnv is the whole environment of a child process (exec.Cmd.Env):
// the allow-listed variables (PATH, HOME, USER, LOGNAME, TMPDIR, TZ, LANG,
// LANGUAGE, LC_*) and extra that getenv has set, as KEY=VALUE. Every
// exec.Cmd of the project sets its Env from it. The result is never nil:
// a nil Env would hand the child this process's whole environment.
func ChildEnv(getenv func(string) string, extra ...string) []string {
	env := []string{}
	seen := map[string]bool{}
	for _, k := range append(childEnvNames(), extra...) {
		if seen[k] {
			continue
		}
		seen[k] = true
		if v := getenv(k); v != "" {
			env = append(env, k+"="+v)
		}
	}
	return env
}
