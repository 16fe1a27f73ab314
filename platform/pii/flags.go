package pii

import (
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strconv"
)

// Flags are the PII settings every binary that reads or writes profile
// data registers. The KEK itself is read from the environment (PII_KEK) or
// a file (PII_KEK_FILE), never from a flag, which anyone on the host can
// read in the process list.
type Flags struct {
	File *string
	Dev  *bool
}

// RegisterFlags registers PII_KEK_FILE and PII_KEK_DEV on fs (a flag wins
// over its variable).
func RegisterFlags(fs *flag.FlagSet) *Flags {
	file := os.Getenv("PII_KEK_FILE")
	dev, _ := strconv.ParseBool(os.Getenv("PII_KEK_DEV"))
	return &Flags{
		File: fs.String("pii-kek-file", file, "file holding the base64 32-byte key-encryption key of personal data, instead of PII_KEK (env PII_KEK_FILE)"),
		Dev:  fs.Bool("pii-kek-dev", dev, "DEVELOPMENT ONLY: without PII_KEK or PII_KEK_FILE, use a fixed, publicly known key that protects nothing (env PII_KEK_DEV)"),
	}
}

// KEK loads the key-encryption key (see Load). The binary must refuse to
// start on an error. Under PII_KEK_DEV without a key it warns on log.
func (f *Flags) KEK(log *slog.Logger) (*KEK, error) {
	k, dev, err := Load(os.Getenv("PII_KEK"), *f.File, *f.Dev)
	if err != nil {
		return nil, fmt.Errorf("%w (PII_KEK_DEV=true runs with a public development key, for development only)", err)
	}
	if dev {
		log.Warn("PII_KEK_DEV: personal data is sealed with a publicly known development key; it is not protected")
	}
	return k, nil
}
