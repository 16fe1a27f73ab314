// Package config defines settings that can be given either as a command-line
// flag or as an environment variable. The flag wins over the variable, and
// the variable wins over the default. Every binary registers its settings on
// a flag.FlagSet, so `-h` lists them with their variables.
package config

import (
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

func usage(env, usage string) string { return fmt.Sprintf("%s (env %s)", usage, env) }

// String registers a string setting.
func String(fs *flag.FlagSet, name, env, def, help string) *string {
	if v, ok := os.LookupEnv(env); ok {
		def = v
	}
	return fs.String(name, def, usage(env, help))
}

// Duration registers a duration setting, written like "10s" or "250ms".
func Duration(fs *flag.FlagSet, name, env string, def time.Duration, help string) *time.Duration {
	p := new(time.Duration)
	*p = def
	fs.Var((*durationValue)(p), name, usage(env, help))
	return withEnv(fs, name, env, p)
}

// Int registers an integer setting.
func Int(fs *flag.FlagSet, name, env string, def int, help string) *int {
	return withEnv(fs, name, env, fs.Int(name, def, usage(env, help)))
}

// Float registers a floating-point setting.
func Float(fs *flag.FlagSet, name, env string, def float64, help string) *float64 {
	return withEnv(fs, name, env, fs.Float64(name, def, usage(env, help)))
}

// Bool registers a boolean setting.
func Bool(fs *flag.FlagSet, name, env string, def bool, help string) *bool {
	return withEnv(fs, name, env, fs.Bool(name, def, usage(env, help)))
}

// withEnv applies the environment variable env, when it is set, to the flag
// name (whose value p points to) through the flag's own parser, so a bad
// value is reported the same way as a bad flag. It returns p.
func withEnv[T any](fs *flag.FlagSet, name, env string, p *T) *T {
	v, ok := os.LookupEnv(env)
	if !ok {
		return p
	}
	if err := fs.Set(name, v); err != nil {
		fmt.Fprintf(os.Stderr, "invalid value %q for %s: %v\n", v, env, err)
		os.Exit(2)
	}
	return p
}

// List splits a comma-separated setting, dropping empty items.
func List(s string) []string {
	var out []string
	for _, item := range strings.Split(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

// Map parses "k=v,k2=v2" into a map.
func Map(s string) (map[string]string, error) {
	out := map[string]string{}
	for _, item := range List(s) {
		k, v, ok := strings.Cut(item, "=")
		if !ok || strings.TrimSpace(k) == "" {
			return nil, fmt.Errorf("%q is not key=value", item)
		}
		out[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	return out, nil
}

type durationValue time.Duration

func (d *durationValue) String() string { return time.Duration(*d).String() }
func (d *durationValue) Set(s string) error {
	v, err := time.ParseDuration(s)
	if err != nil {
		// Accept a bare number of seconds too.
		n, nerr := strconv.Atoi(s)
		if nerr != nil {
			return err
		}
		v = time.Duration(n) * time.Second
	}
	*d = durationValue(v)
	return nil
}
