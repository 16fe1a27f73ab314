package service

import (
	"fmt"
	"os"
	"path/filepath"

	"profiles/platform/kafkax"
	"profiles/platform/pii"
)

// DataDir is a service's data directory (DATA_DIR): every Pebble store of
// the process, each in a sub-directory of its own. keys/ holds the
// keyring's store; the service names its own with Store. Every store is a
// cache of Kafka, so deleting the directory loses nothing.
type DataDir struct {
	// Dir is the directory.
	Dir string
	// Cluster is the id of the Kafka cluster (kafkax.ClusterID), part of
	// the origin every store records (see pebblex.Options.Origin).
	Cluster string
}

// Store returns the directory of the store called name.
func (d DataDir) Store(name string) string { return filepath.Join(d.Dir, name) }

// OpenDataDir makes dir the process's data directory, after Connect: the
// keyring, when the keys are installed, keeps its keys in dir/keys, read
// from this cluster's keys topic with this KEK (a store of another one
// is emptied and read anew). Call it before RunKeys.
//
// A directory that is itself a Pebble store (the layout before every
// store had a sub-directory) is no longer read, and a WARN line says so.
func (b *Boot) OpenDataDir(dir string) (DataDir, error) {
	cluster, err := kafkax.ClusterID(b.Client)
	if err != nil {
		return DataDir{}, err
	}
	d := DataDir{Dir: dir, Cluster: cluster}
	if _, err := os.Stat(filepath.Join(dir, "CURRENT")); err == nil {
		b.Log.Warn("the data directory holds a store of an earlier layout, which is no longer read; its files (all but the sub-directories) can be deleted", "dir", dir)
	}
	if b.Keyring == nil {
		return d, nil
	}
	err = b.Keyring.OpenStore(pii.KeyStoreOptions{Dir: d.Store("keys"), Origin: cluster + " " + b.Kafka.KeysTopic + " " + b.KEK.ID()})
	if err != nil {
		return DataDir{}, fmt.Errorf("the keyring's store: %w", err)
	}
	return d, nil
}
