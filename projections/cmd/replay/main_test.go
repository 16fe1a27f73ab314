package main

import (
	"bytes"
	"strings"
	"testing"
)

// Help and unknown commands are answered from the arguments alone, with the
// usage on the right stream and the right status; a known command is
// handed on.
func TestParseCommand(t *testing.T) {
	for _, tt := range []struct {
		args           []string
		cmd            string
		code           int
		stdout, stderr string // substrings; "" means the stream stays empty
	}{
		{args: nil, code: 2, stderr: "usage: replay COMMAND"},
		{args: []string{"-h"}, code: 0, stdout: "usage: replay COMMAND"},
		{args: []string{"--help"}, code: 0, stdout: "usage: replay COMMAND"},
		{args: []string{"-help"}, code: 0, stdout: "usage: replay COMMAND"},
		{args: []string{"help"}, code: 0, stdout: "status [-json]"},
		{args: []string{"help", "snapshots"}, code: 0, stdout: "-switch"},
		{args: []string{"help", "nope"}, code: 2, stderr: `unknown command "nope"`},
		{args: []string{"nope"}, code: 2, stderr: `unknown command "nope"`},
		{args: []string{"--status"}, code: 2, stderr: `unknown command "--status"`},
		{args: []string{"-version"}, code: 0, stdout: "replay"},
		{args: []string{"version"}, code: 0, stdout: "replay"},
		{args: []string{"status"}, cmd: "status"},
		{args: []string{"status", "-json"}, cmd: "status"},
		{args: []string{"snapshots", "-switch"}, cmd: "snapshots"},
		{args: []string{"views", "-query", "http://x"}, cmd: "views"},
	} {
		var out, errOut bytes.Buffer
		cmd, code := parseCommand(tt.args, &out, &errOut)
		if cmd != tt.cmd || code != tt.code {
			t.Errorf("%q: command %q, status %d; want %q, %d", tt.args, cmd, code, tt.cmd, tt.code)
		}
		for _, s := range []struct {
			name      string
			got, want string
		}{{"stdout", out.String(), tt.stdout}, {"stderr", errOut.String(), tt.stderr}} {
			if s.want == "" && s.got != "" {
				t.Errorf("%q: %s = %q, want nothing", tt.args, s.name, s.got)
			}
			if !strings.Contains(s.got, s.want) {
				t.Errorf("%q: %s = %q, want it to contain %q", tt.args, s.name, s.got, s.want)
			}
		}
	}
}
