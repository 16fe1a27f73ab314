// Package replay rebuilds derived data from the event log, the only truth:
//
//   - RebuildSnapshots folds profile-events into a new snapshot generation
//     (new snapshot and email index topics) next to the live one;
//   - Verify compares a generation with the live one, key by key;
//   - Switch makes a generation current: every projector and query-svc
//     instance follows the control topic and moves over without a restart
//     or a configuration change;
//   - Drop deletes a generation that is not current;
//   - RebuildViews makes query-svc instances drop their Pebble views and
//     re-read them from the snapshot topics, one instance at a time.
//
// Reading uses plain sarama consumers in large batches (kafkax.Read):
// watermill's subscriber hands over one message at a time and waits for its
// ack, which would make a bulk replay as slow as the live projector.
package replay
